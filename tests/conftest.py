"""Shared fixtures for the service tests: one real local Ray + Serve per test session.

The learner app runs behind Serve's real gRPC proxy on a free port with a small model (one
hidden layer of 64 units) and tight limits, so that every behaviour is cheap to reach. Tests
talk to it through real gRPC channels (:class:`clients.LearnerClient` or raw stubs).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

SERVICE_ARGS = dict(
    hidden=[64], device="cpu", minibatch=50, anchor_every=1000, probe_size=64, holdout_every=5,
    min_regime_samples=200, evaluate_every_s=0.5, publish_every_s=0.05, checkpoint_every_s=3600,
    max_samples_per_message=2048, max_message_bytes=4 * 1024 * 1024, num_cpus=1,
    hparams={"lam": 2.0},  # not the default: test_status_reports_learner_state checks it reaches the learner
)


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """The running service: ``.target`` (host:port), ``.metrics_port``, ``.app_name``."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import RunningService, deploy, free_port, start_ray, start_serve

    metrics_port = start_ray(num_cpus=2)
    grpc_port = free_port()
    start_serve(grpc_port=grpc_port)
    config = ServiceConfig(**SERVICE_ARGS, checkpoint_dir=str(tmp_path_factory.mktemp("ckpt-main")))
    deploy(config, app_name="asp")
    running = RunningService(grpc_port, metrics_port, "asp")
    yield running
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def client(service):
    from clients import LearnerClient

    with LearnerClient(service.target, stream_id=f"test-{uuid.uuid4().hex[:8]}") as c:
        yield c


@pytest.fixture(scope="session")
def digits():
    """The embedded MNIST subset as uint8 arrays: (train_x, train_y, test_x, test_y)."""
    from asp_service.data import load_dataset

    ds = load_dataset("embedded")
    return ds.train_x.numpy(), ds.train_y.numpy().astype(np.int64), ds.test_x.numpy(), ds.test_y.numpy().astype(np.int64)


@pytest.fixture
def batches(digits):
    """``batches(count, size=100, offset=0)``: consecutive (x, y) training batches of the embedded set."""
    x, y = digits[0], digits[1]

    def make(count: int, size: int = 100, offset: int = 0):
        for i in range(count):
            start = (offset + i * size) % (len(y) - size)
            yield x[start:start + size], y[start:start + size]

    return make


@pytest.fixture
def tmp_checkpoint_dir(tmp_path) -> Path:
    return tmp_path / "checkpoints"
