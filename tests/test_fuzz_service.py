"""Hostile input against the Ray-free learner service: many generated messages, fast.

Layer (a) of the fuzzing (layer (b), through real gRPC and Serve, is ``test_fuzz_grpc.py``).
Every message goes through exactly what the deployment runs for it
(:func:`~asp_service.serving.validation.check_train_request`, then
:meth:`LearnerService.train` / :meth:`LearnerService.predict`). Properties:

- nothing but :class:`InvalidRequest` escapes, and its code is INVALID_ARGUMENT or
  RESOURCE_EXHAUSTED;
- a refused message leaves the learner's ``state_dict`` (weights, optimizer, importance,
  anchors, detector, buffer, counters), the regimes and probes, the stream positions, the
  rolling accuracy and the published snapshot bit-identical;
- whatever is accepted, every weight stays finite.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from asp_service.serving.config import ServiceConfig
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.service import LearnerService
from asp_service.serving.validation import InvalidRequest, check_train_request

from fuzz_support import Tally, bitwise_equal, fuzz_settings, predict_requests, service_state, tally_fixture, train_requests

REFUSAL_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
SMALL = dict(hidden=[16], device="cpu", minibatch=8, anchor_every=256, probe_size=16, holdout_every=5,
             min_regime_samples=16, max_regimes=4, evaluate_every_samples=50, publish_every_s=0.0,
             max_samples_per_message=64, max_message_bytes=64 * 784 * 4, checkpoint_dir=None)


tally = tally_fixture("service")


@pytest.fixture(scope="module")
def service():
    return LearnerService(ServiceConfig(**SMALL))


def apply_train(service: LearnerService, request: pb.TrainRequest) -> pb.TrainAck:
    """What ``LearnerDeployment.Train``/``TrainBatch`` run for one message."""
    check_train_request(request, service.limits)
    return service.train(request)


def position(service: LearnerService, stream: str) -> int:
    return {s.stream_id: s.last_sequence_number for s in service.status().streams}.get(stream, 0)


def all_finite(service: LearnerService) -> bool:
    tensors = list(service.learner.model.state_dict().values()) + list(service.snapshot.model.state_dict().values())
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def attempt(service: LearnerService, tally: Tally, rpc: str, call) -> None:
    """Call; on refusal check the code and that nothing changed; always check the weights are finite."""
    before = service_state(service)
    try:
        reply = call()
    except InvalidRequest as refused:
        tally.add(rpc, refused.code.name)
        assert refused.code in REFUSAL_CODES, refused
        assert refused.message
        assert bitwise_equal(service_state(service), before), f"refused {rpc} changed the state: {refused}"
    else:
        tally.add(rpc, "OK (duplicate)" if getattr(reply, "duplicate", False) else "OK")
        if rpc == "Predict":
            assert bitwise_equal(service_state(service), before), "Predict changed the state"
    assert all_finite(service)


@fuzz_settings(200)
@given(request=train_requests())
def test_fuzzed_train_messages_are_refused_cleanly_or_applied(service, tally, request):
    """When any TrainRequest arrives, it is applied, acknowledged as a duplicate, or refused with
    INVALID_ARGUMENT / RESOURCE_EXHAUSTED and no change at all."""
    attempt(service, tally, "Train", lambda: apply_train(service, request))


@fuzz_settings(120)
@given(request=predict_requests())
def test_fuzzed_predict_requests_never_change_state(service, tally, request):
    """When any PredictRequest arrives, it is answered or refused with a refusal code; state never changes."""
    attempt(service, tally, "Predict", lambda: service.predict(request))


@fuzz_settings(20)
@given(numbers=st.lists(st.one_of(st.integers(0, 12), st.sampled_from([2**63, 2**64 - 1])), min_size=1, max_size=8))
def test_sequence_numbers_in_any_order_apply_each_number_once(service, tally, numbers):
    """When a stream's sequence numbers repeat, go down, jump or are 0, exactly the ones above the
    highest applied so far are applied, and the stream's position is that highest number."""
    stream = f"seq-{len(service.streams)}"
    x = np.random.default_rng(len(numbers)).integers(0, 256, (4, 784), dtype=np.uint8)
    inputs = pb.Tensor(shape=[4, 784], dtype=pb.DTYPE_UINT8, data=x.tobytes())
    highest = 0
    for number in numbers:
        request = pb.TrainRequest(stream_id=stream, sequence_number=number, inputs=inputs, labels=[1, 2, 3, 4])
        attempt(service, tally, "Train", lambda: apply_train(service, request))
        if number > highest:
            highest = number
        assert position(service, stream) == highest


EXTREME = {
    "all ones float32": lambda n: np.ones((n, 784), np.float32),
    "all zeros float32": lambda n: np.zeros((n, 784), np.float32),
    "all 255 uint8": lambda n: np.full((n, 784), 255, np.uint8),
    "one lit pixel": lambda n: np.eye(784, dtype=np.float32)[:n],
    "subnormal float32": lambda n: np.full((n, 784), 1e-45, np.float32),
}


@pytest.mark.parametrize("strategy", ["asp", "ewc", "si", "mas"])
def test_extreme_valid_data_never_makes_weights_nan(strategy):
    """When valid but extreme images (all ones, all zeros, one class repeated) are trained on for
    many steps with anchors in between, every weight and importance stays finite."""
    service = LearnerService(ServiceConfig(**{**SMALL, "strategy": strategy, "anchor_every": 32}))
    sequence = 0
    for name, make in EXTREME.items():
        for label in (0, 9):  # one class repeated, then another
            for _ in range(4):
                sequence += 1
                x = make(16)
                request = pb.TrainRequest(stream_id="extreme", sequence_number=sequence, labels=[label] * 16,
                                          inputs=pb.Tensor(shape=list(x.shape), dtype=pb.DTYPE_UINT8 if x.dtype == np.uint8
                                                           else pb.DTYPE_FLOAT32, data=x.tobytes()),
                                          task_hint=name)
                apply_train(service, request)
    assert service.learner.anchors_taken > 0
    assert all_finite(service)
    state = service.learner.state_dict()
    for part in ("consolidation", "strategy_state"):
        for tensor in _tensors(state[part]):
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), part
    reply = service.status()
    assert all(np.isfinite([i.mean, i.max, i.nonzero_frac]).all() for i in reply.importance)


def test_a_non_finite_step_is_skipped_counted_and_reported():
    """When a step's loss or gradient is not finite (here: an absurd learning rate blows the logits
    up), the learner skips it instead of writing NaN into the weights, and the service reports
    the count in GetStatus (``skipped_steps``)."""
    service = LearnerService(ServiceConfig(**{**SMALL, "lr": 1e30, "strategy": "vanilla"}))
    x = np.ones((32, 784), np.float32)
    acks = []
    for sequence in range(1, 9):
        acks.append(apply_train(service, pb.TrainRequest(
            stream_id="blow-up", sequence_number=sequence, labels=[sequence % 10] * 32,
            inputs=pb.Tensor(shape=[32, 784], dtype=pb.DTYPE_FLOAT32, data=x.tobytes()))))
    assert service.learner.skipped_steps > 0
    assert all_finite(service)
    status = service.status()
    assert status.skipped_steps == service.learner.skipped_steps
    # The acks tell applied from refused samples: every sample is accounted for exactly once,
    # and the refused ones count neither as trained nor in the reported loss.
    assert all(a.samples_applied + a.held_out + a.samples_skipped == 32 for a in acks)
    skipped = sum(a.samples_skipped for a in acks)
    assert skipped > 0
    assert all(np.isfinite(a.loss) for a in acks)
    position = next(p for p in status.streams if p.stream_id == "blow-up")
    assert position.samples_skipped == skipped
    assert position.samples_trained == sum(a.samples_applied for a in acks) == service.learner.samples_seen


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
