"""Hypothesis strategies for hostile ``asp.v1`` messages, and helpers shared by the fuzz tests.

The strategies mix valid messages with every way of breaking one: shapes of any length and
size (0, negative, huge), unknown dtype enum values, byte strings of the wrong length,
float32 values outside [0, 1] (NaN, +-Inf, -0.0, subnormals, 1e38), labels outside the
classes or in the wrong number, sequence numbers 0 / huge / repeated / decreasing, long or
control-character stream ids and task hints, top_k of any uint32, unknown attention targets.

:class:`Tally` counts what was tried and how it was answered; the fuzz tests write it as JSON
(``fuzz-*.json`` in the test's tmp dir, or ``$ASP_FUZZ_REPORT_DIR``) for docs/SECURITY.md.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from asp_service.serving.protos import learner_pb2 as pb

#: Reproducible in CI: derandomized, no example database, no deadline (a shared 2-core machine).
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, **FUZZ_SETTINGS)


INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 9, 10, 11, 27, 28, 29, 783, 784, 785, 2**31 - 1, 2**31, 2**32, -(2**31),
                     2**62, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
ENUM = st.one_of(st.sampled_from([0, 1, 2, 3, 7, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1.0000001, -1e-45, 1e-45, -1.0, 2.0, 255.0, 1e38, -1e38,
                     float("nan"), float("inf"), float("-inf")]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.floats(0.0, 1.0, width=32),
)
SAMPLE_SHAPES = [(1, 28, 28), (28, 28), (784,)]
TEXT = st.one_of(st.sampled_from(["", "a", "default", "task-1", "\n", "x\x00y", "é" * 300, "a" * 257, "\u202e"]),
                 st.text(max_size=40), st.text(min_size=250, max_size=300))
SEQUENCE = st.one_of(st.sampled_from([0, 1, 2, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


@st.composite
def tensors(draw, *, max_n: int = 8) -> pb.Tensor:
    """A Tensor message: valid, or broken in its shape, dtype, length or values."""
    kind = draw(st.sampled_from(["valid_u8", "valid_f32", "extreme_f32", "shape", "length", "dtype", "empty"]))
    n = draw(st.integers(1, max_n))
    sample = draw(st.sampled_from(SAMPLE_SHAPES))
    if kind == "valid_u8":
        values = draw(st.sampled_from([0, 255, None]))
        array = (np.full((n, *sample), values, np.uint8) if values is not None else
                 np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (n, *sample), dtype=np.uint8))
        return pb.Tensor(shape=[n, *sample], dtype=pb.DTYPE_UINT8, data=array.tobytes())
    if kind == "valid_f32":
        fill = draw(st.sampled_from([0.0, 1.0, -0.0, 1e-45, None]))
        array = (np.full((n, *sample), fill, "<f4") if fill is not None else
                 np.random.default_rng(draw(st.integers(0, 2**16))).random((n, *sample), dtype=np.float32))
        return pb.Tensor(shape=[n, *sample], dtype=pb.DTYPE_FLOAT32, data=array.astype("<f4").tobytes())
    if kind == "extreme_f32":  # right shape and length, some values out of [0, 1] or not finite
        array = np.full((n, *sample), draw(st.floats(0.0, 1.0, width=32)), "<f4").reshape(n, -1)
        for _ in range(draw(st.integers(1, 4))):
            array[draw(st.integers(0, n - 1)), draw(st.integers(0, 783))] = draw(FLOATS)
        return pb.Tensor(shape=[n, *sample], dtype=pb.DTYPE_FLOAT32, data=array.astype("<f4").tobytes())
    if kind == "shape":  # any shape, data sized for it when that is small
        shape = draw(st.lists(st.one_of(INT64, st.integers(0, 800)), max_size=6))
        dtype = draw(st.sampled_from([pb.DTYPE_UINT8, pb.DTYPE_FLOAT32]))
        size = int(np.prod([max(d, 0) for d in shape], dtype=object)) * (1 if dtype == pb.DTYPE_UINT8 else 4)
        data = bytes(size) if 0 <= size <= 200_000 else draw(st.binary(max_size=64))
        return pb.Tensor(shape=shape, dtype=dtype, data=data)
    if kind == "length":  # the right shape, the wrong number of bytes
        dtype = draw(st.sampled_from([pb.DTYPE_UINT8, pb.DTYPE_FLOAT32]))
        size = n * 784 * (1 if dtype == pb.DTYPE_UINT8 else 4)
        delta = draw(st.sampled_from([-size, -1, 1, 3, size]))
        return pb.Tensor(shape=[n, *sample], dtype=dtype, data=bytes(size + delta))
    if kind == "dtype":
        return pb.Tensor(shape=[n, *sample], dtype=draw(ENUM), data=bytes(n * 784 * draw(st.sampled_from([1, 2, 4, 8]))))
    return pb.Tensor(shape=draw(st.sampled_from([[], [0], [0, 784], [0, 28, 28], [-1, 784]])),
                     dtype=pb.DTYPE_UINT8)


def batch_size(tensor: pb.Tensor) -> int:
    return int(tensor.shape[0]) if len(tensor.shape) and 0 <= tensor.shape[0] <= 64 else 1


@st.composite
def labels_for(draw, n: int) -> list[int]:
    kind = draw(st.sampled_from(["valid", "valid", "one_class", "range", "count"]))
    if kind == "valid":
        return draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    if kind == "one_class":
        return [draw(st.integers(0, 9))] * n
    if kind == "range" and n > 0:
        labels = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
        labels[draw(st.integers(0, n - 1))] = draw(INT64)
        return labels
    return draw(st.lists(st.integers(0, 9), max_size=2 * n + 2))


@st.composite
def train_requests(draw, *, max_n: int = 8) -> pb.TrainRequest:
    inputs = draw(tensors(max_n=max_n))
    stream_id = draw(st.one_of(TEXT, st.uuids().map(str)))  # fresh streams: more messages get applied
    return pb.TrainRequest(stream_id=stream_id, sequence_number=draw(SEQUENCE), inputs=inputs,
                           labels=draw(labels_for(batch_size(inputs))), task_hint=draw(TEXT))


@st.composite
def predict_requests(draw, *, max_n: int = 8) -> pb.PredictRequest:
    inputs = draw(tensors(max_n=max_n))
    n = batch_size(inputs)
    target = draw(st.one_of(st.sampled_from([0, 1, 2, 3]), ENUM))
    att_labels = draw(st.one_of(st.lists(st.integers(0, 9), min_size=1, max_size=1),
                                st.lists(st.integers(0, 9), min_size=n, max_size=n),
                                st.lists(INT64, max_size=n + 2)))
    top_k = draw(st.one_of(st.sampled_from([0, 1, 3, 10, 11, 2**32 - 1]), st.integers(0, 2**32 - 1)))
    return pb.PredictRequest(inputs=inputs, top_k=top_k,
                             attention=pb.AttentionRequest(target=target, labels=att_labels, png=draw(st.booleans())))


# ---------------------------------------------------------------------- state comparison
def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes (any dtype, bfloat16 included)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def bitwise_equal(a: Any, b: Any) -> bool:
    """Deep equality where tensors and arrays must match bit for bit (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(_bytes(a), _bytes(b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(bitwise_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(bitwise_equal(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return a == b


def service_state(service) -> dict:
    """Everything a refused message must leave untouched in a Ray-free LearnerService."""
    return copy.deepcopy({
        "learner": service.learner.state_dict(),
        "regimes": service.regimes.state_dict(),
        "streams": dict(service.streams),
        "batches_seen": service.batches_seen,
        "prequential": vars(service.prequential),
        "snapshot_version": service.snapshot.version,
        "snapshot": service.snapshot.model.state_dict(),
    })


class Tally:
    """How many inputs were tried and how each was answered (status code name or OK)."""

    def __init__(self, name: str):
        self.name = name
        self.by_rpc: dict[str, Counter] = {}

    def add(self, rpc: str, outcome: str) -> None:
        self.by_rpc.setdefault(rpc, Counter())[outcome] += 1

    def summary(self) -> dict:
        rpcs = {rpc: {"tried": sum(c.values()), "rejected": sum(v for k, v in c.items() if not k.startswith("OK")),
                      "by_code": dict(sorted(c.items()))} for rpc, c in sorted(self.by_rpc.items())}
        total = Counter()
        for c in self.by_rpc.values():
            total.update(c)
        return {"name": self.name, "tried": sum(total.values()),
                "rejected": sum(v for k, v in total.items() if not k.startswith("OK")),
                "by_code": dict(sorted(total.items())), "by_rpc": rpcs}

    def write(self, folder: Path) -> Path:
        folder = Path(os.environ.get("ASP_FUZZ_REPORT_DIR", folder))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"fuzz-{self.name}.json"
        summary = self.summary()
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nfuzz {self.name}: {summary['tried']} tried, {summary['rejected']} rejected "
              f"{summary['by_code']} -> {path}")
        return path


def tally_fixture(name: str):
    """A module-scoped ``tally`` fixture that writes its report when the module ends."""

    @pytest.fixture(scope="module")
    def tally(tmp_path_factory):
        t = Tally(name)
        yield t
        t.write(tmp_path_factory.mktemp("fuzz"))

    return tally
