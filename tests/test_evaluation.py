"""Behaviour of the evaluation package: metrics on hand-computed matrices, the prequential
window, and the continual runner (with a scripted fake learner and the real one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asp_service.data import make_scenario, split_scenario
from asp_service.evaluation import (PrequentialAccuracy, RunEvent, acc, average_accuracy_curve,
                                    bwt, evaluate_task, forgetting, mean_forgetting,
                                    run_continual)

# A 3-task matrix worked out by hand.
R3 = np.array([
    [0.90, 0.10, 0.12],
    [0.70, 0.95, 0.11],
    [0.60, 0.80, 0.97],
])


def test_metrics_on_hand_computed_matrix():
    """ACC, BWT, forgetting and the curve match the numbers computed by hand."""
    assert acc(R3) == pytest.approx((0.60 + 0.80 + 0.97) / 3)
    assert bwt(R3) == pytest.approx(((0.60 - 0.90) + (0.80 - 0.95)) / 2)  # -0.225
    # forgetting_j = max_{i<T} R[i,j] - R[T,j]:  task 0: 0.90-0.60, task 1: 0.95-0.80
    np.testing.assert_allclose(forgetting(R3), [0.30, 0.15])
    assert mean_forgetting(R3) == pytest.approx(0.225)
    np.testing.assert_allclose(average_accuracy_curve(R3),
                               [0.90, (0.70 + 0.95) / 2, (0.60 + 0.80 + 0.97) / 3])


def test_forgetting_uses_best_earlier_row_not_diagonal():
    """When accuracy on a task rises after it is trained, forgetting counts from the peak,
    while BWT counts from the diagonal."""
    R = np.array([[0.5, 0.0, 0.0],
                  [0.9, 0.8, 0.0],
                  [0.7, 0.8, 0.9]])
    np.testing.assert_allclose(forgetting(R), [0.2, 0.0])
    assert bwt(R) == pytest.approx(((0.7 - 0.5) + 0.0) / 2)  # positive backward transfer


def test_metrics_single_task_and_validation():
    R = np.array([[0.8]])
    assert acc(R) == pytest.approx(0.8) and bwt(R) == 0.0 and mean_forgetting(R) == 0.0
    assert forgetting(R).shape == (0,)
    for bad in (np.zeros((2, 3)), np.zeros(3), np.zeros((0, 0))):
        with pytest.raises(ValueError):
            acc(bad)


def test_prequential_window_weighted_by_samples():
    """The window holds the last `window` batches and weights them by sample count."""
    p = PrequentialAccuracy(window=3)
    assert math.isnan(p.value) and math.isnan(p.cumulative)
    assert p.update(correct=1, n=1) == 1.0
    assert p.update(correct=0, n=3) == pytest.approx(1 / 4)
    assert p.update(correct=6, n=6) == pytest.approx(7 / 10)
    assert p.update(correct=0, n=10) == pytest.approx(6 / 19)  # first batch left the window
    assert p.cumulative == pytest.approx(7 / 20) and p.samples == 20
    p.reset()
    assert p.samples == 0 and math.isnan(p.value)


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"window": -2}, {"window": 1.5},
                                    {"window": True}])
def test_prequential_rejects_bad_window(kwargs):
    with pytest.raises(ValueError):
        PrequentialAccuracy(**kwargs)


def test_prequential_rejects_bad_counts():
    p = PrequentialAccuracy(window=2)
    for correct, n in ((3, 2), (-1, 2), (0, -1)):
        with pytest.raises(ValueError):
            p.update(correct=correct, n=n)


@settings(max_examples=60, deadline=None)
@given(window=st.integers(1, 6),
       batches=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 20)), min_size=1,
                        max_size=30))
def test_prequential_matches_brute_force(window, batches):
    p = PrequentialAccuracy(window=window)
    for k, (c, n) in enumerate(batches):
        c = min(c, n)
        batches[k] = (c, n)
        got = p.update(correct=c, n=n)
        last = batches[max(0, k + 1 - window): k + 1]
        assert got == pytest.approx(sum(b[0] for b in last) / sum(b[1] for b in last))


# ------------------------------------------------------------------------------ runner
class ScriptedLearner:
    """Predicts a fixed class ranking; records what the runner calls."""

    def __init__(self, n_classes: int, ranking: list[int]):
        self.n_classes = n_classes
        self.scores = torch.zeros(n_classes)
        for rank, c in enumerate(ranking):
            self.scores[c] = float(len(ranking) - rank)
        self.observed: list[tuple[int, list[int] | None]] = []
        self.boundaries: list[int] = []
        self.predict_calls = 0

    def observe(self, x, y, classes=None):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        self.observed.append((len(y), classes))
        pred = self.scores.expand(len(x), -1).argmax(1)
        return {"correct": int((pred == y).sum()), "n": len(y), "loss": 1.0,
                "anchored": len(self.observed) == 2, "drift": False}

    def predict(self, x, classes=None):
        self.predict_calls += 1
        assert not torch.is_grad_enabled()  # evaluation runs under no_grad
        return self.scores.expand(len(x), -1).clone()

    def mark_task_boundary(self):
        self.boundaries.append(len(self.observed))


def test_runner_task_aware_calls_boundaries_between_tasks_and_masks():
    """In a task-incremental run, boundaries come between tasks only, the class mask is passed
    to observe, and evaluation predicts within each task's classes."""
    s = split_scenario(dataset="embedded", mode="task", n_tasks=3, train_per_task=150,
                       test_per_task=40)
    # ranking prefers odd classes: within every pair (2k, 2k+1) it always answers 2k+1
    learner = ScriptedLearner(10, [9, 7, 5, 3, 1, 8, 6, 4, 2, 0])
    events: list[RunEvent] = []
    r = run_continual(learner, s, batch_size=100, eval_batch_size=16, callback=events.append)
    assert [n for n, _ in learner.observed] == [100, 50] * 3
    assert [c for _, c in learner.observed] == [[0, 1]] * 2 + [[2, 3]] * 2 + [[4, 5]] * 2
    assert learner.boundaries == [2, 4]
    expected = [float((t.test_y % 2 == 1).float().mean()) for t in s.tasks]
    np.testing.assert_allclose(r.R, np.tile(expected, (3, 1)))
    assert r.acc == pytest.approx(np.mean(expected))
    assert r.bwt == pytest.approx(0.0) and r.mean_forgetting == pytest.approx(0.0)
    assert len(r.prequential) == 6 and r.prequential_samples[-1] == 450
    assert r.anchor_steps == [150] and r.drift_steps == []
    assert [e.kind for e in events].count("step") == 6
    ends = [e for e in events if e.kind == "task_end"]
    assert [e.task for e in ends] == [0, 1, 2]
    np.testing.assert_allclose(ends[0].accuracies, expected)
    assert r.wall_time >= r.train_time >= 0 and r.eval_time >= 0
    d = r.to_dict()
    assert isinstance(d["R"], list) and d["task_names"] == ["digits-0-1", "digits-2-3",
                                                            "digits-4-5"]


def test_runner_task_free_never_marks_boundaries():
    s = make_scenario("split-domain", dataset="embedded", n_tasks=2, train_per_task=100,
                      test_per_task=20)
    learner = ScriptedLearner(2, [1, 0])
    r = run_continual(learner, s, batch_size=50, task_aware=False)
    assert learner.boundaries == []
    assert all(c is None for _, c in learner.observed)
    assert r.R.shape == (2, 2) and not r.task_aware


def test_evaluate_task_without_mask_is_plain_argmax():
    s = make_scenario("split-class", dataset="embedded", n_tasks=1, test_per_task=30)
    learner = ScriptedLearner(10, [1, 0])
    assert evaluate_task(learner, s.tasks[0], batch_size=7) == pytest.approx(
        float((s.tasks[0].test_y == 1).float().mean()))


def test_runner_validates_arguments():
    s = make_scenario("permuted", dataset="embedded", n_tasks=1, train_per_task=10)
    with pytest.raises(ValueError):
        run_continual(ScriptedLearner(10, [0]), s, batch_size=0)
    with pytest.raises(ValueError):
        run_continual(ScriptedLearner(10, [0]), s, eval_batch_size=0)


def test_runner_with_real_learner_learns_first_task():
    """With the real OnlineLearner, a short vanilla run beats chance on the first task."""
    learning = pytest.importorskip("asp_service.learning")
    torch.manual_seed(0)
    s = make_scenario("permuted", dataset="embedded", n_tasks=2, train_per_task=1000,
                      test_per_task=300)
    learner = learning.OnlineLearner(learning.mlp(784, [100], 10), strategy="vanilla",
                                     device="cpu")
    r = run_continual(learner, s, batch_size=100)
    assert r.R[0, 0] > 0.4  # chance is 0.1; ten Adam steps reach about 0.55
    assert r.R.shape == (2, 2) and len(r.prequential) == 20


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6).flatmap(
    lambda t: st.lists(st.floats(0, 1), min_size=t * t, max_size=t * t)))
def test_forgetting_bounds_backward_transfer(values):
    """Forgetting counts from the best earlier row, which includes the diagonal, so
    mean forgetting >= -BWT and ACC stays in [0, 1]."""
    t = int(round(len(values) ** 0.5))
    R = np.array(values).reshape(t, t)
    assert mean_forgetting(R) >= -bwt(R) - 1e-12
    assert 0.0 <= acc(R) <= 1.0
    assert average_accuracy_curve(R)[-1] == pytest.approx(acc(R))


@pytest.mark.parametrize("module", ["asp_service.evaluation.metrics",
                                    "asp_service.evaluation.prequential",
                                    "asp_service.evaluation.runner"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
