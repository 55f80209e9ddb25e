"""Each strategy must reduce forgetting, not only run: a small, fast domain-incremental stream
(Split MNIST on the shipped embedded subset, 5 tasks, labels 0/1 within each pair) where plain
fine-tuning forgets about 40 points. The margin (5 points of BWT) can fail."""

import pytest
import torch

from asp_service.data import make_scenario
from asp_service.evaluation import run_continual
from asp_service.learning import OnlineLearner, mlp

# Strengths for this small stream (20-sample batches, 60 steps a task); the README's sweeps pick
# the defaults for the paper's full-size benchmarks.
LAM = {"asp": 1e4, "ewc": 1e5, "online_ewc": 1e5, "si": 100.0, "mas": 10.0}
MARGIN = 5.0


@pytest.fixture(scope="module")
def scenario():
    return make_scenario("split-domain", dataset="embedded", seed=0)


def bwt(strategy, scenario, lam=None):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        kw = {} if lam is None else {"lam": lam}
        learner = OnlineLearner(mlp(784, [100], scenario.n_classes), strategy=strategy, device="cpu", **kw)
        return 100 * run_continual(learner, scenario, batch_size=20).bwt
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vanilla_bwt(scenario):
    return bwt("vanilla", scenario)


@pytest.mark.parametrize("strategy", sorted(LAM))
def test_strategy_forgets_less_than_vanilla(strategy, scenario, vanilla_bwt):
    assert vanilla_bwt < -20, "the stream must cause forgetting for the comparison to mean anything"
    got = bwt(strategy, scenario, LAM[strategy])
    assert got > vanilla_bwt + MARGIN, f"{strategy}: BWT {got:.1f} vs vanilla {vanilla_bwt:.1f}"
