"""Decoding and validation of request tensors, done in full before the learner is touched.

Every check raises :class:`InvalidRequest` carrying the gRPC status code to answer with, so
that a rejected message leaves weights, importance and counters exactly as they were.

>>> import numpy as np
>>> from asp_service.serving.protos import learner_pb2 as pb
>>> limits = Limits(input_shape=(1, 28, 28), num_classes=10)
>>> msg = pb.Tensor(shape=[2, 784], dtype=pb.DTYPE_UINT8, data=bytes(2 * 784))
>>> decode_inputs(msg, limits).shape
(2, 1, 28, 28)
>>> decode_inputs(pb.Tensor(shape=[2, 783], dtype=pb.DTYPE_UINT8, data=bytes(2 * 783)), limits)
Traceback (most recent call last):
...
asp_service.serving.validation.InvalidRequest: INVALID_ARGUMENT: inputs: per-sample shape (783,) does not match the model's input (1, 28, 28); send one of (N, 1, 28, 28), (N, 28, 28), (N, 784)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import grpc
import numpy as np

from asp_service.serving.protos import learner_pb2 as pb

_DTYPES = {pb.DTYPE_UINT8: np.dtype(np.uint8), pb.DTYPE_FLOAT32: np.dtype("<f4")}


class InvalidRequest(ValueError):
    """A request the service refuses; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __reduce__(self):  # Ray ships it between processes
        return (InvalidRequest, (self.code, self.message))


def invalid(message: str) -> InvalidRequest:
    return InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class Limits:
    """What one message may carry."""

    input_shape: tuple[int, ...]
    num_classes: int
    max_samples: int = 4096          # per message
    max_bytes: int = 16 * 1024 * 1024  # of tensor data per message
    max_id_chars: int = 256          # stream_id and task_hint

    @property
    def accepted_shapes(self) -> list[tuple[int, ...]]:
        shapes = [tuple(self.input_shape)]
        if len(self.input_shape) == 3 and self.input_shape[0] == 1:
            shapes.append(tuple(self.input_shape[1:]))
        flat = (math.prod(self.input_shape),)
        if flat not in shapes:
            shapes.append(flat)
        return shapes


def decode_inputs(tensor: pb.Tensor, limits: Limits, *, field: str = "inputs") -> np.ndarray:
    """Decode a Tensor message to float32 ``(N, *input_shape)`` in [0, 1], or raise."""
    shape = tuple(int(d) for d in tensor.shape)
    if not shape:
        raise invalid(f"{field}: shape is missing; give (N, ...) with N the batch size")
    n = shape[0]
    if n <= 0:
        raise invalid(f"{field}: empty batch (shape {shape})")
    if n > limits.max_samples:
        raise InvalidRequest(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{field}: {n} samples in one message, over the limit of {limits.max_samples}; split the batch",
        )
    if len(tensor.data) > limits.max_bytes:
        raise InvalidRequest(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{field}: {len(tensor.data)} bytes of data, over the limit of {limits.max_bytes}",
        )
    if any(d <= 0 for d in shape[1:]) or shape[1:] not in limits.accepted_shapes:
        options = ", ".join("(N, " + ", ".join(map(str, s)) + ")" for s in limits.accepted_shapes)
        raise invalid(
            f"{field}: per-sample shape {shape[1:]} does not match the model's input "
            f"{tuple(limits.input_shape)}; send one of {options}"
        )
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        name = pb.DType.Name(tensor.dtype) if tensor.dtype in pb.DType.values() else str(tensor.dtype)
        raise invalid(f"{field}: dtype {name} is not supported; use DTYPE_UINT8 or DTYPE_FLOAT32")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise invalid(
            f"{field}: data holds {len(tensor.data)} bytes but shape {shape} of "
            f"{dtype.name} needs {expected}"
        )
    array = np.frombuffer(tensor.data, dtype=dtype).reshape((n, *limits.input_shape))
    if dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.argwhere(~finite.reshape(n, -1))[0][0])
        raise invalid(f"{field}: sample {bad} contains NaN or Inf")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise invalid(f"{field}: float32 values must lie in [0, 1] (got min {low:g}, max {high:g})")
    return array.astype(np.float32, copy=True)


def check_train_request(request: pb.TrainRequest, limits: Limits) -> None:
    """Refuse a TrainRequest whose sequence number, stream id or task hint is unusable.

    Stream ids and task hints are kept (stream positions, regime names, metric labels) and
    may be logged, so they must be short and free of control characters (no log injection).
    The tensors are checked by :func:`decode_inputs` and :func:`decode_labels`.
    """
    if request.sequence_number == 0:
        raise invalid("sequence_number: must be set (1, 2, ... per stream)")
    for field, value in (("stream_id", request.stream_id), ("task_hint", request.task_hint)):
        if len(value) > limits.max_id_chars:
            raise invalid(f"{field}: {len(value)} characters, over the limit of {limits.max_id_chars}")
        if not value.isprintable():
            raise invalid(f"{field}: control or non-printable characters are not allowed")


def decode_labels(labels: Sequence[int], n: int, num_classes: int, *, field: str = "labels") -> np.ndarray:
    """Labels as int64 ``(n,)`` in ``[0, num_classes)``, or raise."""
    if len(labels) != n:
        raise invalid(f"{field}: {len(labels)} labels for {n} samples; give one label per sample")
    array = np.asarray(labels, dtype=np.int64)
    out_of_range = (array < 0) | (array >= num_classes)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise invalid(f"{field}: label {int(array[i])} at index {i} is outside [0, {num_classes})")
    return array


def encode_inputs(array: np.ndarray) -> pb.Tensor:
    """The inverse of :func:`decode_inputs` for clients: uint8 or float32 arrays, batch first."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint8:
        dtype = pb.DTYPE_UINT8
    else:
        array = array.astype("<f4", copy=False)
        dtype = pb.DTYPE_FLOAT32
    return pb.Tensor(shape=list(array.shape), dtype=dtype, data=array.tobytes())
