"""When the live forgetting probes are measured (LearnerService, no Ray): at the end of a Train
stream when the weights changed, never again while they are unchanged, and by sample count."""

import numpy as np

from asp_service.serving.config import ServiceConfig
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.service import LearnerService

SMALL = dict(hidden=[16], device="cpu", minibatch=20, anchor_every=10_000, probe_size=16, holdout_every=5,
             min_regime_samples=16, evaluate_every_s=1e-6, evaluate_every_samples=10_000, publish_every_s=0.0,
             checkpoint_dir=None)


def message(seq: int, n: int = 100) -> pb.TrainRequest:
    rng = np.random.default_rng(seq)
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    return pb.TrainRequest(stream_id="s", sequence_number=seq, labels=rng.integers(0, 10, n).tolist(),
                           inputs=pb.Tensor(shape=[n, 784], dtype=pb.DTYPE_UINT8, data=x.tobytes()))


def test_probes_are_measured_when_the_weights_changed_and_only_then(monkeypatch):
    service = LearnerService(ServiceConfig(**SMALL))
    measured = []
    evaluate = service.regimes.evaluate
    monkeypatch.setattr(service.regimes, "evaluate", lambda predict: (measured.append(service.learner.version),
                                                                       evaluate(predict)))
    for seq in (1, 2, 3):
        service.train(message(seq))
    assert measured == []  # 240 samples trained: fewer than evaluate_every_samples
    service.flush()  # TrainBatch's flush: publishes only
    assert measured == []
    service.flush(evaluate=True)  # a Train stream ended
    assert measured == [service.learner.version]
    assert service.status().regimes and all(r.current_accuracy >= 0 for r in service.status().regimes)
    service.tick()  # due by time (evaluate_every_s ~ 0), but the weights did not change
    service.flush(evaluate=True)
    assert measured == [service.learner.version]
    before = service.learner.version
    service.train(message(4))
    service.tick()  # the weights changed: measured again
    assert service.learner.version > before and measured == [before, service.learner.version]
