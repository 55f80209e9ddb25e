"""Hostile input through real gRPC: Serve's proxy and the session's learner replica.

Layer (b) of the fuzzing (layer (a), many more examples against the Ray-free service, is
``test_fuzz_service.py``): tens of generated messages per RPC, with random extra metadata,
sent to a real app (``asp-fuzz``, a second app on the session's Serve), plus raw byte strings (random, or valid messages with bytes flipped)
that the proxy itself must decode. Properties: every refusal is INVALID_ARGUMENT or
RESOURCE_EXHAUSTED, a refused message leaves the learner's status (counters, version,
importance, stream positions, regimes, skipped steps) unchanged, and Health still answers
SERVING at the end.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asp_service.serving.protos import learner_pb2 as pb

from conftest import SERVICE_ARGS
from fuzz_support import Tally, fuzz_settings, predict_requests, tally_fixture, train_requests

pytestmark = pytest.mark.serve

REFUSAL_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
EXTRA_METADATA = st.lists(st.one_of(
    st.tuples(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=16).map(lambda k: "x-fuzz-" + k),
              st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=64)),
    st.tuples(st.just("x-fuzz-bin"), st.binary(max_size=64)),
), max_size=3)


tally = tally_fixture("grpc")


@pytest.fixture(scope="module")
def fuzz_app(service, tmp_path_factory):
    """A second app, ``asp-fuzz``, on the session's Serve instance: the fuzzing (task hints,
    streams, re-anchors) must not change the state the other service tests read."""
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import deploy
    from clients import LearnerClient

    deploy(ServiceConfig(**{**SERVICE_ARGS, "num_cpus": 0}, checkpoint_dir=str(tmp_path_factory.mktemp("ckpt-fuzz"))),
           app_name="asp-fuzz")
    with LearnerClient(service.target, application="asp-fuzz") as probe:
        probe.wait_ready()
    yield service
    serve.delete("asp-fuzz")


@pytest.fixture(scope="module")
def stub(fuzz_app):
    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    with grpc.insecure_channel(fuzz_app.target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        yield pb_grpc.LearnerStub(channel), channel


APP = (("application", "asp-fuzz"),)


def fingerprint(stub) -> tuple:
    s = stub.GetStatus(pb.StatusRequest(), metadata=APP, timeout=60)
    return (s.samples_seen, s.batches_seen, s.model_version, s.anchors_taken, s.skipped_steps,
            tuple((i.layer, i.mean, i.max, i.nonzero_frac) for i in s.importance),
            tuple((p.stream_id, p.last_sequence_number) for p in s.streams),
            tuple((r.name, r.probe_size) for r in s.regimes))


def attempt(stub, tally: Tally, rpc: str, send, *, allowed=REFUSAL_CODES) -> None:
    before = fingerprint(stub)
    try:
        reply = send()
    except grpc.RpcError as error:
        tally.add(rpc, error.code().name)
        assert error.code() in allowed, (rpc, error.code(), error.details())
        if error.code() == grpc.StatusCode.UNKNOWN:
            assert "Error parsing message" in (error.details() or ""), (rpc, error.details())
        assert fingerprint(stub) == before, f"refused {rpc} changed the state: {error.details()}"
    else:
        if isinstance(reply, list) and not reply:  # a stream that ended without an ack
            tally.add(rpc, "OK (stream ended, no ack)")
            assert fingerprint(stub) == before, f"{rpc} ended without an ack but changed the state"
        else:
            tally.add(rpc, "OK")


@fuzz_settings(80)
@given(request=train_requests(), rpc=st.sampled_from(["TrainBatch", "Train"]), extra=EXTRA_METADATA)
def test_fuzzed_training_through_grpc(stub, tally, request, rpc, extra):
    """When any TrainRequest (with any extra metadata) reaches the real app, it is applied or refused
    with INVALID_ARGUMENT / RESOURCE_EXHAUSTED and no change."""
    learner, _ = stub
    metadata = APP + tuple(extra)
    if rpc == "Train":
        attempt(learner, tally, rpc, lambda: list(learner.Train(iter([request]), metadata=metadata, timeout=60)))
    else:
        attempt(learner, tally, rpc, lambda: learner.TrainBatch(request, metadata=metadata, timeout=60))


@fuzz_settings(50)
@given(request=predict_requests(), extra=EXTRA_METADATA)
def test_fuzzed_predictions_through_grpc(stub, tally, request, extra):
    learner, _ = stub
    attempt(learner, tally, "Predict", lambda: learner.Predict(request, metadata=APP + tuple(extra), timeout=60))


def _valid_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(train_requests().map(lambda m: m.SerializeToString()),
                     predict_requests().map(lambda m: m.SerializeToString()))


@st.composite
def wire_bytes(draw) -> bytes:
    """Random bytes, or a valid encoding with bytes flipped, cut or appended."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    data = bytearray(draw(_valid_bytes()))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


#: Undecodable bytes never reach a replica: the proxy's gRPC server fails to parse them and
#: answers UNKNOWN ("Unexpected DecodeError ... Error parsing message"). Only that UNKNOWN is
#: accepted; any other UNKNOWN or INTERNAL (an exception in the replica) fails the test.
WIRE_CODES = REFUSAL_CODES | {grpc.StatusCode.UNKNOWN}


@fuzz_settings(60)
@given(data=wire_bytes(), rpc=st.sampled_from(["TrainBatch", "Predict", "GetStatus", "Checkpoint", "Reanchor",
                                               "Health", "Train"]))
def test_raw_bytes_through_grpc(stub, tally, data, rpc):
    """When the request bytes themselves are garbage, the proxy or the replica refuses them (or, when
    they happen to decode into a valid message, answers it) and the replica keeps serving."""
    learner, channel = stub
    if rpc == "Train":
        method = channel.stream_stream("/asp.v1.Learner/Train")
        attempt(learner, tally, "raw:" + rpc, lambda: list(method(iter([data]), metadata=APP, timeout=60)),
                allowed=WIRE_CODES)
        return
    method = channel.unary_unary(f"/asp.v1.Learner/{rpc}")
    attempt(learner, tally, "raw:" + rpc, lambda: method(data, metadata=APP, timeout=60), allowed=WIRE_CODES)


def test_replica_still_serving_after_the_fuzzing(stub, tally):
    """After every fuzz case above, Health answers SERVING and a valid prediction works."""
    learner, _ = stub
    assert learner.Health(pb.HealthRequest(), metadata=APP, timeout=30).status == pb.HealthReply.STATUS_SERVING
    x = pb.Tensor(shape=[1, 784], dtype=pb.DTYPE_UINT8, data=bytes(784))
    assert len(learner.Predict(pb.PredictRequest(inputs=x), metadata=APP, timeout=30).predictions) == 1
