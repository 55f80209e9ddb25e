"""Bad input is refused with a clear status and leaves the learner exactly as it was."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from asp_service.serving.protos import learner_pb2 as pb

from conftest import SERVICE_ARGS

pytestmark = pytest.mark.serve

MAX_SAMPLES = SERVICE_ARGS["max_samples_per_message"]
MAX_BYTES = SERVICE_ARGS["max_message_bytes"]


def tensor(array: np.ndarray, dtype=None, shape=None, data=None) -> pb.Tensor:
    dtype = dtype if dtype is not None else (pb.DTYPE_UINT8 if array.dtype == np.uint8 else pb.DTYPE_FLOAT32)
    return pb.Tensor(shape=list(shape if shape is not None else array.shape), dtype=dtype,
                     data=data if data is not None else array.astype(array.dtype).tobytes())


def u8(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def f32(n: int, value: float | None = None) -> np.ndarray:
    x = np.random.default_rng(n).random((n, 784), dtype=np.float32)
    if value is not None:
        x[n - 1, 100] = value
    return x


# name -> (inputs, labels, expected code, words the message must contain)
BAD_TRAIN = {
    "wrong shape": (tensor(u8(4), shape=[4, 27, 29]), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    "no batch dimension": (tensor(u8(1), shape=[]), [1], grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    "byte length mismatch": (tensor(u8(4), data=u8(4).tobytes()[:-3]), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
    "NaN": (tensor(f32(4, np.nan)), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    "Inf": (tensor(f32(4, np.inf)), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "Inf"),
    "float out of [0, 1]": (tensor(f32(4, 3.0)), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "[0, 1]"),
    "unknown dtype": (tensor(u8(4), dtype=pb.DTYPE_UNSPECIFIED), [1] * 4, grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
    "label out of range": (tensor(u8(4)), [1, 2, 10, 3], grpc.StatusCode.INVALID_ARGUMENT, "outside [0, 10)"),
    "negative label": (tensor(u8(4)), [1, -1, 2, 3], grpc.StatusCode.INVALID_ARGUMENT, "outside"),
    "label count mismatch": (tensor(u8(4)), [1, 2, 3], grpc.StatusCode.INVALID_ARGUMENT, "3 labels for 4 samples"),
    "empty batch": (pb.Tensor(shape=[0, 28, 28], dtype=pb.DTYPE_UINT8), [], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "too many samples": (tensor(np.zeros((MAX_SAMPLES + 1, 784), np.uint8)), [0] * (MAX_SAMPLES + 1),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    "too many bytes": (tensor(np.zeros((MAX_BYTES // (784 * 4) + 1, 784), np.float32)),
                       [0] * (MAX_BYTES // (784 * 4) + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes"),
}


def fingerprint(client, probe: np.ndarray) -> tuple:
    """Everything a rejected message must not change: counters, version, importance, predictions."""
    status = client.status()
    importance = tuple((i.layer, i.mean, i.max, i.nonzero_frac) for i in status.importance)
    streams = tuple((s.stream_id, s.last_sequence_number) for s in status.streams)
    regimes = tuple((r.name, r.probe_size) for r in status.regimes)
    probs = tuple(np.round(np.array([p.probabilities for p in client.predict(probe).predictions]), 7).ravel())
    return (status.samples_seen, status.batches_seen, status.model_version, status.anchors_taken,
            importance, streams, regimes, probs)


@pytest.mark.parametrize("case", list(BAD_TRAIN), ids=list(BAD_TRAIN))
@pytest.mark.parametrize("rpc", ["Train", "TrainBatch"])
def test_bad_training_message_is_refused_and_changes_nothing(client, digits, case, rpc):
    """When a training message is malformed, the call fails with the right code and a clear message."""
    inputs, labels, code, words = BAD_TRAIN[case]
    probe = digits[2][:4]
    before = fingerprint(client, probe)
    request = pb.TrainRequest(stream_id=client.stream_id, sequence_number=1, inputs=inputs, labels=labels)
    with pytest.raises(grpc.RpcError) as raised:
        if rpc == "Train":
            list(client._stub.Train(iter([request]), metadata=client.metadata, timeout=60))
        else:
            client._stub.TrainBatch(request, metadata=client.metadata, timeout=60)
    assert raised.value.code() == code
    assert words in raised.value.details()
    assert fingerprint(client, probe) == before


def test_missing_sequence_number_is_refused(client, digits):
    request = pb.TrainRequest(inputs=tensor(u8(2)), labels=[0, 1])
    with pytest.raises(grpc.RpcError) as raised:
        client._stub.TrainBatch(request, metadata=client.metadata)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequence_number" in raised.value.details()


def test_bad_message_mid_stream_keeps_what_came_before(client, digits, batches):
    """When message 3 of a stream is bad, messages 1-2 stay applied and the stream ends with INVALID_ARGUMENT."""
    good = [client.message(x, y) for x, y in batches(2)]
    bad = pb.TrainRequest(stream_id=client.stream_id, sequence_number=3, inputs=tensor(f32(4, np.nan)),
                          labels=[0] * 4)
    acks = []
    with pytest.raises(grpc.RpcError) as raised:
        for ack in client._stub.Train(iter(good + [bad]), metadata=client.metadata, timeout=60):
            acks.append(ack)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [a.sequence_number for a in acks] == [1, 2]
    position = {s.stream_id: s.last_sequence_number for s in client.status().streams}
    assert position[client.stream_id] == 2


BAD_PREDICT = {
    "wrong shape": (pb.PredictRequest(inputs=tensor(u8(2), shape=[2, 30, 28])), "shape"),
    "NaN": (pb.PredictRequest(inputs=tensor(f32(2, np.nan))), "NaN"),
    "empty batch": (pb.PredictRequest(inputs=pb.Tensor(shape=[0, 784], dtype=pb.DTYPE_UINT8)), "empty"),
    "top_k too large": (pb.PredictRequest(inputs=tensor(u8(2)), top_k=11), "top_k"),
    "attention label out of range": (pb.PredictRequest(inputs=tensor(u8(2)), attention=pb.AttentionRequest(
        target=pb.AttentionRequest.TARGET_LABELS, labels=[12])), "attention.labels"),
    "attention labels count": (pb.PredictRequest(inputs=tensor(u8(3)), attention=pb.AttentionRequest(
        target=pb.AttentionRequest.TARGET_LABELS, labels=[1, 2])), "attention.labels"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT), ids=list(BAD_PREDICT))
def test_bad_predict_request_is_refused(client, case):
    request, words = BAD_PREDICT[case]
    with pytest.raises(grpc.RpcError) as raised:
        client._stub.Predict(request, metadata=client.metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in raised.value.details()


def test_oversized_predict_is_resource_exhausted(client):
    request = pb.PredictRequest(inputs=tensor(np.zeros((MAX_SAMPLES + 1, 784), np.uint8)))
    with pytest.raises(grpc.RpcError) as raised:
        client._stub.Predict(request, metadata=client.metadata, timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
