"""Durability without Ray: restore reports for damaged files, checkpoints by sample count,
coalesced checkpoint requests, durable positions in acks (a message is durable once both
checkpoint files hold it, so a damaged current.ckpt loses nothing durable); and the client's
bounded buffer.

(Fallbacks of :meth:`CheckpointStore.load` per kind of damage are in test_service_checkpoint.py;
a real replica killed with damaged files on disk is in test_reliability_crash.py.)
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from asp_service.serving.checkpoint import MAGIC, CheckpointStore

from conftest import SERVICE_ARGS


def flip_a_byte(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_restore_sets_a_damaged_current_aside_and_reports_the_fallback(tmp_checkpoint_dir, caplog):
    """When current.ckpt fails its checksum, restore() uses previous.ckpt, renames the damaged file
    to current.ckpt.corrupt (reported once, kept for inspection), logs it and says why."""
    store = CheckpointStore(tmp_checkpoint_dir)
    store.save({"step": 1})
    store.save({"step": 2})
    flip_a_byte(store.current)
    with caplog.at_level(logging.WARNING, logger="asp_service.serving.checkpoint"):
        (state, info), report = store.restore()
    assert state["step"] == 1 and info.path.endswith("previous.ckpt")
    assert (report.source, report.reason) == ("previous", "current_corrupt")
    assert report.corrupt == (str(tmp_checkpoint_dir / "current.ckpt.corrupt"),)
    assert not store.current.exists() and "damaged" in caplog.text
    # the next start finds previous.ckpt alone: nothing damaged any more
    assert store.restore()[1].reason == "current_missing" and store.restore()[1].corrupt == ()
    store.save({"step": 3})  # and the next save keeps the good previous one
    assert store.restore()[0][0]["step"] == 3 and store.load()[0]["step"] == 3


def test_restore_never_returns_garbage(tmp_checkpoint_dir):
    """When both files are damaged, one of them with a valid checksum over bytes that are not a
    checkpoint, restore() starts from nothing and reports both; interrupted writes are removed."""
    store = CheckpointStore(tmp_checkpoint_dir)
    store.save({"step": 1})
    store.save({"step": 2})
    store.current.write_bytes(store.current.read_bytes()[:-100])  # truncated
    garbage = b"not a torch file"
    store.previous.write_bytes(MAGIC + hashlib.sha256(garbage).digest() + garbage)  # checksum fine, content not
    stale = tmp_checkpoint_dir / ".ckpt-abc.tmp"
    stale.write_bytes(b"half a write")
    loaded, report = store.restore()
    assert loaded is None and (report.source, report.reason) == ("none", "all_corrupt") and len(report.corrupt) == 2
    assert not stale.exists()
    assert CheckpointStore(tmp_checkpoint_dir / "empty").restore()[1].reason == "empty"


def message(stream: str, number: int, n: int = 100):
    from asp_service.serving.protos import learner_pb2 as pb
    from asp_service.serving.validation import encode_inputs

    rng = np.random.default_rng(number)
    return pb.TrainRequest(stream_id=stream, sequence_number=number,
                           inputs=encode_inputs(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                           labels=rng.integers(0, 10, n).tolist())


@pytest.fixture
def make_service(tmp_checkpoint_dir):
    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.service import LearnerService

    def make(**overrides):
        args = {**SERVICE_ARGS, "checkpoint_dir": str(tmp_checkpoint_dir), **overrides}
        return LearnerService(ServiceConfig(**args))

    return make


def test_acks_carry_the_durable_position_and_checkpoints_follow_the_sample_count(make_service):
    """When checkpoint_every_samples trained samples are not in a checkpoint, the tick writes one;
    a message is durable once both checkpoint files hold it (after the next write), and the acks
    say so; a restart restores at least the durable messages, and exactly those in current.ckpt."""
    service = make_service(checkpoint_every_samples=200)
    acks = [service.train(message("s", n)) for n in (1, 2)]  # 160 samples trained (20 held out)
    assert [a.durable_sequence_number for a in acks] == [0, 0] and not service.checkpoint_due()
    service.train(message("s", 3))
    assert service.checkpoint_due()
    service.tick()  # current.ckpt: 1-3; no previous.ckpt yet, so nothing is durable
    assert service.train(message("s", 4)).durable_sequence_number == 0
    assert not service.checkpoint_due()  # 80 samples since, and an hour is not over
    service.train(message("s", 5))
    service.train(message("s", 6))
    service.tick()  # current.ckpt: 1-6, previous.ckpt: 1-3
    assert service.train(message("s", 7)).durable_sequence_number == 3
    status = service.status()
    assert status.checkpoints.written == 2 and status.checkpoints.samples_since_checkpoint == 80
    (stream,) = status.streams
    assert (stream.last_sequence_number, stream.durable_sequence_number, stream.messages) == (7, 3, 7)
    assert stream.samples_trained + stream.samples_held_out == 700

    restarted = make_service(checkpoint_every_samples=200)  # as after a crash: message 7 is lost
    (stream,) = restarted.status().streams
    assert (stream.last_sequence_number, stream.samples_trained + stream.samples_held_out) == (6, 600)
    assert restarted.status().checkpoints.restored_from == "current"
    # previous.ckpt's positions are unknown after a restart: durable 0 until the next write rotates
    assert stream.durable_sequence_number == 0
    assert restarted.train(message("s", 7)).duplicate is False
    restarted.checkpoint()  # previous.ckpt <- the restored 1-6, current.ckpt <- 1-7
    assert restarted.train(message("s", 8)).durable_sequence_number == 6


def test_idle_service_writes_at_most_once_more_after_the_last_change(make_service):
    """When nothing changes after a write, the tick writes once more after checkpoint_every_s (so
    that both files hold everything, and it is durable), then never again."""
    service = make_service(checkpoint_every_s=1e-6)
    assert not service.checkpoint_due()  # a fresh, untouched service writes nothing
    service.train(message("s", 1))
    service.tick()
    assert service.status().checkpoints.written == 1 and service.status().streams[0].durable_sequence_number == 0
    service.tick()
    (stream,) = service.status().streams
    assert service.status().checkpoints.written == 2 and stream.durable_sequence_number == 1
    for _ in range(3):
        service.tick()
    assert service.status().checkpoints.written == 2 and not service.checkpoint_due()
    service.shutdown()  # nothing new: the graceful shutdown writes nothing either
    assert service.status().checkpoints.written == 2


def test_a_damaged_current_checkpoint_loses_nothing_durable(make_service, tmp_checkpoint_dir):
    """When current.ckpt is damaged, the restart restores previous.ckpt, which holds every message
    that was acknowledged as durable; the durable numbers after it never go below that."""
    service = make_service()
    for n in (1, 2, 3):
        service.train(message("s", n))
    service.checkpoint()
    service.checkpoint()  # both files: 1-3
    service.train(message("s", 4))
    service.checkpoint()  # current: 1-4, previous: 1-3
    durable = service.train(message("s", 5)).durable_sequence_number
    assert durable == 3
    flip_a_byte(tmp_checkpoint_dir / "current.ckpt")

    restarted = make_service()
    status = restarted.status()
    (stream,) = status.streams
    assert (status.checkpoints.restored_from, status.checkpoints.restore_reason) == ("previous", "current_corrupt")
    assert stream.last_sequence_number >= durable and stream.last_sequence_number == 3
    for n in (4, 5):
        assert restarted.train(message("s", n)).duplicate is False
    restarted.checkpoint()  # no current.ckpt to rotate: previous.ckpt (1-3) stays, current: 1-5
    assert restarted.train(message("s", 6)).durable_sequence_number == 3
    restarted.checkpoint()  # rotates: previous.ckpt 1-5, current.ckpt 1-6
    assert restarted.train(message("s", 7)).durable_sequence_number == 5


def test_a_checkpoint_request_with_nothing_new_reuses_the_last_checkpoint(make_service):
    """When both checkpoint files hold everything applied, Checkpoint answers with the last one (no
    write); when only current.ckpt holds it, one more write (which makes it durable)."""
    service = make_service()
    service.train(message("s", 1))
    first = service.checkpoint()  # current.ckpt: 1, no previous.ckpt
    assert [(p.stream_id, p.last_sequence_number, p.durable_sequence_number) for p in first.streams] == [("s", 1, 0)]
    second = service.checkpoint()  # only current.ckpt held it: one write
    assert service.status().checkpoints.written == 2
    assert [(p.stream_id, p.durable_sequence_number) for p in second.streams] == [("s", 1)]
    again = service.checkpoint()  # both files hold it: no write
    assert again.sha256 == second.sha256 and service.status().checkpoints.written == 2
    assert [(p.stream_id, p.durable_sequence_number) for p in again.streams] == [("s", 1)]
    service.reanchor()  # a re-anchor changes the state: the next request writes
    assert service.checkpoint().sha256 != second.sha256 and service.status().checkpoints.written == 3


def test_checkpoints_from_before_the_per_stream_counters_still_load(make_service, tmp_checkpoint_dir):
    """When a checkpoint keeps only each stream's position (the earlier format), it restores it."""
    service = make_service()
    service.train(message("old", 1))
    service.checkpoint()
    store = CheckpointStore(tmp_checkpoint_dir)
    state, _ = store.load()
    state["streams"] = {"old": 1}
    store.save(state)
    (stream,) = make_service().status().streams
    # restored from current.ckpt; previous.ckpt's positions are not known: durable 0 until a write
    assert (stream.stream_id, stream.last_sequence_number, stream.durable_sequence_number) == ("old", 1, 0)


@pytest.mark.serve
def test_the_client_buffer_stays_bounded_and_asks_for_checkpoints(service, batches):
    """When more messages are streamed than the client may hold unsaved, it asks for checkpoints
    and never holds more than max_unsaved; every message is acknowledged once."""
    import uuid

    from clients import LearnerClient

    with LearnerClient(service.target, stream_id=f"bounded-{uuid.uuid4().hex[:6]}", max_unsaved=4) as client:
        acks = list(client.train(batches(24, size=50)))
        assert [a.sequence_number for a in acks] == list(range(1, 25))
        assert client.max_buffered <= 4 and client.checkpoint_requests >= 3
        assert client.buffered <= 4 and client.durable >= 20
        durable = [a.durable_sequence_number for a in acks]
        assert durable == sorted(durable) and durable[-1] >= 20


def test_save_says_whether_it_moved_current_to_previous(tmp_checkpoint_dir):
    """When current.ckpt is good, a save rotates it to previous.ckpt; when it is missing or damaged,
    previous.ckpt is left as it is, and save() says so (the service tracks each file's content)."""
    store = CheckpointStore(tmp_checkpoint_dir)
    assert store.save({"step": 1}).rotated is False  # nothing to rotate
    assert store.save({"step": 2}).rotated is True
    flip_a_byte(store.current)
    assert store.save({"step": 3}).rotated is False  # the damaged file never pushes out previous.ckpt
    store.current.unlink()
    assert store.load()[0]["step"] == 1
