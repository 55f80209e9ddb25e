"""Checkpoints: atomic and checksummed, restored on start, previous one kept as a fallback."""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pytest
import torch

from asp_service.serving.checkpoint import MAGIC, CheckpointStore

from conftest import SERVICE_ARGS


def test_store_round_trips_and_keeps_the_previous_checkpoint(tmp_checkpoint_dir):
    store = CheckpointStore(tmp_checkpoint_dir)
    first = store.save({"step": 1, "w": torch.arange(3.0)})
    second = store.save({"step": 2, "w": torch.arange(3.0) * 2})
    state, info = store.load()
    assert state["step"] == 2 and info.sha256 == second.sha256
    assert store.previous.exists() and first.sha256 != second.sha256
    assert not list(tmp_checkpoint_dir.glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete", "bad magic"])
def test_bad_current_checkpoint_falls_back_to_the_previous_one(tmp_checkpoint_dir, caplog, damage):
    """When current.ckpt fails its sha256 (or is gone), load() logs it and returns previous.ckpt."""
    store = CheckpointStore(tmp_checkpoint_dir)
    store.save({"step": 1})
    store.save({"step": 2})
    raw = bytearray(store.current.read_bytes())
    if damage == "flip a byte":
        raw[-5] ^= 0xFF
        store.current.write_bytes(bytes(raw))
    elif damage == "truncate":
        store.current.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "delete":
        store.current.unlink()
    else:
        store.current.write_bytes(b"NOTACKPT" + bytes(raw[len(MAGIC):]))
    with caplog.at_level(logging.WARNING, logger="asp_service.serving.checkpoint"):
        state, info = store.load()
    assert state["step"] == 1 and info.path.endswith("previous.ckpt")
    assert "falling back" in caplog.text


def test_a_corrupt_current_checkpoint_never_replaces_the_previous_good_one(tmp_checkpoint_dir):
    store = CheckpointStore(tmp_checkpoint_dir)
    store.save({"step": 1})
    store.save({"step": 2})
    store.current.write_bytes(b"garbage")
    store.save({"step": 3})
    assert store.load()[0]["step"] == 3
    store.current.unlink()
    assert store.load()[0]["step"] == 1


@pytest.mark.serve
def test_state_survives_a_restart_and_a_graceful_shutdown(service, digits, batches, tmp_checkpoint_dir):
    """When the app is redeployed on the same checkpoint folder, the learner continues where it stopped.

    Checkpoint on demand, then train more and stop gracefully (the replica's final checkpoint),
    then restart: counters, stream positions and predictions are those of the last state; with the
    current checkpoint corrupted, the restart falls back to the previous one.
    """
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import deploy
    from clients import LearnerClient

    app = f"restart-{uuid.uuid4().hex[:6]}"
    config = ServiceConfig(**{**SERVICE_ARGS, "num_cpus": 0.5}, checkpoint_dir=str(tmp_checkpoint_dir))
    probe = digits[2][:16]

    def snapshot(c: LearnerClient):
        s = c.status()
        probs = np.array([p.probabilities for p in c.predict(probe).predictions])
        return s.samples_seen, s.model_version, s.anchors_taken, tuple((p.stream_id, p.last_sequence_number)
                                                                       for p in s.streams), probs

    deploy(config, app_name=app)
    try:
        with LearnerClient(service.target, application=app, stream_id="restart") as c:
            list(c.train(batches(4)))
            reply = c.checkpoint()
            assert len(reply.sha256) == 64 and reply.path.endswith("current.ckpt")
            at_checkpoint = snapshot(c)
            list(c.train(batches(3, offset=400)))
            at_shutdown = snapshot(c)
        serve.delete(app)  # graceful: the replica writes a final checkpoint

        deploy(config, app_name=app)
        with LearnerClient(service.target, application=app, stream_id="restart") as c:
            restored = snapshot(c)
            assert restored[:4] == at_shutdown[:4]
            np.testing.assert_allclose(restored[4], at_shutdown[4], atol=1e-6)
            assert [a.sequence_number for a in c.train(batches(1), resume=True)] == [8]
        serve.delete(app)

        store = CheckpointStore(tmp_checkpoint_dir)
        store.current.write_bytes(store.current.read_bytes()[:-100])  # damaged on disk
        deploy(config, app_name=app)
        with LearnerClient(service.target, application=app) as c:
            fallback = snapshot(c)
        # previous.ckpt is the state saved on the graceful shutdown above
        assert fallback[:2] == at_shutdown[:2]
        assert at_checkpoint[0] < at_shutdown[0]
    finally:
        serve.delete(app)
