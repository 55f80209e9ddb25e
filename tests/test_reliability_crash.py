"""Crash recovery: the learner replica's process is killed (SIGKILL) mid-stream, for real.

Ray Serve starts a new replica, which restores the last good checkpoint; the client reconnects,
asks where its stream stands and resends every message the restored state lacks. Each message
ends up applied exactly once: the per-stream counters (samples trained + held out) equal what
was sent. With ``current.ckpt`` damaged on disk, the new replica falls back to ``previous.ckpt``,
says so in its status, its log and a metric, and nothing acknowledged as durable is lost: a
message is durable only once both files hold it, so the client still has every message the
restored file lacks and resends it.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
import uuid

import pytest

from conftest import SERVICE_ARGS

pytestmark = pytest.mark.serve

SAMPLES = 100  # per message


def wait_for(condition, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout_s} s")
        time.sleep(0.01)


def position(status, stream_id: str):
    return {p.stream_id: p for p in status.streams}[stream_id]


def kill_replica(client) -> int:
    """SIGKILL the learner replica's process (its pid comes from GetStatus); returns the pid."""
    pid = client.status().pid
    assert pid and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_new_replica(client, old_pid: int, timeout_s: float = 120.0) -> None:
    import grpc

    def restarted() -> bool:
        try:
            return client.status().pid not in (0, old_pid)
        except grpc.RpcError:
            time.sleep(0.5)
            return False

    wait_for(restarted, timeout_s, "a new learner replica")


@pytest.fixture(scope="module")
def crash_app(service, tmp_path_factory):
    """A learner app of its own (the session's stays untouched), checkpointing only when asked."""
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import deploy

    app = f"crash-{uuid.uuid4().hex[:6]}"
    directory = tmp_path_factory.mktemp("ckpt-crash")
    config = ServiceConfig(**{**SERVICE_ARGS, "num_cpus": 0.5, "checkpoint_every_samples": None},
                           checkpoint_dir=str(directory))
    deploy(config, app_name=app)
    yield app, directory
    serve.delete(app)


def test_a_replica_killed_mid_stream_restarts_and_every_message_is_applied_exactly_once(service, crash_app, batches):
    """When the replica is SIGKILLed with messages 21-24 applied but only 1-20 in a checkpoint, the
    new replica restores 1-20, the client resends from 21, and every sample is applied once."""
    from clients import LearnerClient

    app, _ = crash_app
    total = 40
    seen: dict = {}
    # max_unsaved 64: the client never asks for a checkpoint itself here (the bound is tested in
    # test_reliability_checkpoint.py), so 1-20 are exactly what is durable when the kill comes
    # (two requests: the first puts 1-20 into current.ckpt, the second into previous.ckpt too)
    client = LearnerClient(service.target, application=app, stream_id=f"crash-{uuid.uuid4().hex[:6]}",
                           max_unsaved=64)

    def source():
        for index, batch in enumerate(batches(total, size=SAMPLES)):
            number = index + 1  # the sequence number this batch gets
            if number == 21:  # 1-20 applied: make them durable
                wait_for(lambda: client.last_acked >= 20, what="ack 20")
                client.checkpoint()
                client.checkpoint()
                seen["durable"] = client.durable
            if number == 25:  # 21-24 applied, not durable: kill the replica
                wait_for(lambda: client.last_acked >= 24, what="ack 24")
                seen["before"] = position(client.status(), client.stream_id)
                seen["pid"] = kill_replica(client)
            yield batch

    with client:
        acks = list(client.train(source(), retries=30, backoff_s=0.5))
        status = client.status()
        client.checkpoint()  # previous.ckpt: the restored 1-20, current.ckpt: 1-40
        client.checkpoint()  # both: 1-40
        assert client.buffered == 0  # all durable now: nothing held for a resend

    assert seen["durable"] == 20
    assert (seen["before"].last_sequence_number, seen["before"].durable_sequence_number) == (24, 20)
    assert status.pid != seen["pid"] and client.reconnects >= 1 and client.lost == 0
    assert (status.checkpoints.restored_from, status.checkpoints.restore_reason) == ("current", "verified")
    # 21-24 were applied, lost with the process, and applied again after the restore
    applied = [a.sequence_number for a in acks if not a.duplicate]
    assert sorted(set(applied)) == list(range(1, total + 1))
    assert sorted(n for n in set(applied) if applied.count(n) > 1) == [21, 22, 23, 24]
    # exactly once in the state that survived: every sample sent is trained on or held out, once
    stream = position(status, client.stream_id)
    assert stream.last_sequence_number == total and stream.messages == total
    assert stream.samples_trained + stream.samples_held_out == total * SAMPLES
    assert stream.samples_held_out == total * SAMPLES // SERVICE_ARGS["holdout_every"]
    assert status.samples_seen == sum(p.samples_trained for p in status.streams)


def test_a_damaged_current_checkpoint_falls_back_to_the_previous_one_after_a_kill(service, crash_app, batches):
    """When current.ckpt is corrupted on disk and the replica is killed, the new replica restores
    previous.ckpt, sets the damaged file aside, reports it (status, metric), and nothing is lost:
    the messages only the damaged file held were never acknowledged as durable, so the client
    still holds them and resends them; every sample is applied exactly once."""
    from clients import LearnerClient

    app, directory = crash_app
    with LearnerClient(service.target, application=app, stream_id=f"damaged-{uuid.uuid4().hex[:6]}") as client:
        list(client.train(batches(3, size=SAMPLES)))
        client.checkpoint()  # previous.ckpt will hold 1-3
        list(client.train(batches(2, size=SAMPLES, offset=300)))
        client.checkpoint()  # current.ckpt holds 1-5
        assert client.durable == 3 and client.buffered == 2  # 1-3 are in both files, 4-5 in one
        current = directory / "current.ckpt"
        raw = bytearray(current.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        current.write_bytes(bytes(raw))
        pid = kill_replica(client)
        wait_for_new_replica(client, pid)

        status = client.status()
        assert status.pid != pid
        assert (status.checkpoints.restored_from, status.checkpoints.restore_reason) == ("previous", "current_corrupt")
        assert status.checkpoints.corrupt_files == 1 and (directory / "current.ckpt.corrupt").exists()
        stream = position(status, client.stream_id)
        assert (stream.last_sequence_number, stream.samples_trained + stream.samples_held_out) == (3, 3 * SAMPLES)
        # 4-5 were never durable: the client still has them and resends them before 6
        acks = list(client.train(batches(1, size=SAMPLES, offset=600)))
        assert client.lost == 0 and [a.sequence_number for a in acks] == [4, 5, 6]
        assert not any(a.duplicate for a in acks)
        stream = position(client.status(), client.stream_id)
        assert (stream.last_sequence_number, stream.messages) == (6, 6)
        assert stream.samples_trained + stream.samples_held_out == 6 * SAMPLES  # each sample once

    # the restore is in the metrics: ray_asp_checkpoint_restore_total{source="previous",reason="current_corrupt"}
    deadline = time.monotonic() + 60
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).read().decode()
        found = [line for line in text.splitlines() if line.startswith("ray_asp_checkpoint_restore_total")
                 and 'source="previous"' in line and 'reason="current_corrupt"' in line and f'application="{app}"' in line]
        if found or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert found, "ray_asp_checkpoint_restore_total{source=previous, reason=current_corrupt} not exported"


def test_predictions_in_flight_when_the_replica_dies_are_retried_and_answered(service, crash_app, batches):
    """When the replica is SIGKILLed while a client predicts in a loop (so a call is in flight),
    the client retries reads (they change nothing) and every Predict gets an answer."""
    import threading

    from clients import LearnerClient

    app, _ = crash_app
    x, _ = next(batches(1, size=4))
    answered, errors, stop = [], [], threading.Event()
    with LearnerClient(service.target, application=app, read_retry_s=120) as client, \
            LearnerClient(service.target, application=app) as killer:

        def predict_loop() -> None:
            while not stop.is_set():
                try:
                    answered.append(len(client.predict(x).predictions))
                except Exception as error:  # noqa: BLE001 - any failure fails the test
                    errors.append(error)

        thread = threading.Thread(target=predict_loop, daemon=True)
        thread.start()
        wait_for(lambda: len(answered) >= 20, what="predictions before the kill")
        pid = kill_replica(killer)
        wait_for_new_replica(killer, pid)
        before = len(answered)
        wait_for(lambda: len(answered) >= before + 20, what="predictions after the restart")
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors[:3]
    assert set(answered) == {4}
