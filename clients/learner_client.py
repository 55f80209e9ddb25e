"""Typed Python client for the ``asp.v1.Learner`` gRPC service.

:meth:`LearnerClient.train` streams batches of samples, numbers each message (per
``stream_id``) and keeps every message the service has not yet made *durable* (contained in
both of its checkpoint files, so that even a damaged newest file loses none of them; it takes
two checkpoint writes; each ack says up to which sequence number that is). When the connection
drops (UNAVAILABLE and similar codes), it reconnects, asks the service where the stream stands
(the last message it applied: after a crash of the replica, the last one in the checkpoint it
restored) and resends everything after that; a message the service had already applied is
acknowledged as a duplicate and skipped. So nothing is learned twice and nothing is lost, even
when the replica's process is killed. The buffer is bounded (``max_unsaved`` messages): when
half of it is not durable the client asks the service for a checkpoint, and when it is full
it stops sending until checkpoints release some (a request answered by one write may release
nothing yet; the next one, asked while the buffer stays full, does). ``resume=True``
continues the numbering of a stream the service already knows, e.g. after the client process
itself restarted.

Example (needs a running service)::

    with LearnerClient("127.0.0.1:9000") as client:
        for ack in client.train((x[i:i + 500], y[i:i + 500]) for i in range(0, len(y), 500)):
            print(ack.sequence_number, ack.correct / max(ack.samples_applied, 1))
        reply = client.predict(x[:4], top_k=3, attention="predicted", png=True)
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Iterable, Iterator, Sequence

import grpc
import numpy as np

from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.protos import learner_pb2_grpc as pb_grpc
from asp_service.serving.validation import encode_inputs

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
})
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_TARGETS = {
    None: pb.AttentionRequest.TARGET_NONE,
    "predicted": pb.AttentionRequest.TARGET_PREDICTED,
    "runner_up": pb.AttentionRequest.TARGET_RUNNER_UP,
    "runner-up": pb.AttentionRequest.TARGET_RUNNER_UP,
}


class _Attempt:
    """One Train call; ``broken`` stops its request iterator once the call is over."""

    def __init__(self, resend_after: int) -> None:
        self.broken = False
        self.resend_after = resend_after  # the service has applied every message up to this one


class LearnerClient:
    """A connection to the service; thread-safe for unary calls, one ``train`` stream at a time."""

    def __init__(self, target: str = "127.0.0.1:9000", *, application: str = "asp", stream_id: str | None = None,
                 timeout_s: float = 60.0, max_unsaved: int = 64, token: str | None = None,
                 read_retry_s: float = 30.0, tls: bool = False, root_certificates: bytes | None = None):
        """``token``: bearer token sent as ``authorization`` metadata (default: ``$ASP_TOKEN``, if set).
        ``read_retry_s``: how long Predict and GetStatus (read-only, so safe to repeat) keep retrying
        a transient failure, such as the learner replica restarting after a crash (0: never).
        ``tls``: connect with TLS (to a terminating proxy such as ``deploy/tls/nginx.conf``),
        verifying the server against ``root_certificates`` (PEM bytes; default: the system's
        roots). Giving ``root_certificates`` implies ``tls``."""
        if max_unsaved < 1:
            raise ValueError(f"max_unsaved must be at least 1, not {max_unsaved}")
        self.target = target
        self.tls = bool(tls or root_certificates)
        self._root_certificates = root_certificates
        token = token if token is not None else os.environ.get("ASP_TOKEN", "")
        self.metadata = (("application", application),) + ((("authorization", f"Bearer {token}"),) if token else ())
        self.stream_id = stream_id or f"client-{uuid.uuid4().hex[:12]}"
        self.timeout_s = timeout_s
        self.read_retry_s = read_retry_s
        self.read_retries = 0     # transient failures of reads that a retry answered
        self.max_unsaved = max_unsaved
        self.sequence_number = 0  # last one given to a message
        self.last_acked = 0       # last one the service said it applied
        self.durable = 0          # last one the service said is in a checkpoint on disk
        self.reconnects = 0
        self.checkpoint_requests = 0
        self.max_buffered = 0     # most messages held at once (never above max_unsaved)
        self.lost = 0             # messages said durable that a restart did not restore (both checkpoints lost)
        self._durability = True   # False once the service said it has no checkpoints
        self._max_in_flight = 4
        self._cond = threading.Condition()
        self._source_lock = threading.Lock()
        self._pending: deque[pb.TrainRequest] = deque()  # numbered, not durable yet: sent or to send
        self._checkpointing: threading.Thread | None = None
        self._connect()

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if self.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
            self._channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stub = pb_grpc.LearnerStub(self._channel)

    def reconnect(self) -> None:
        self._channel.close()
        self._connect()
        self.reconnects += 1

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "LearnerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until Health answers SERVING (the proxy is up before the app is)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.health().status == pb.HealthReply.STATUS_SERVING:
                    return
            except grpc.RpcError as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service at {self.target} not ready: {error.code().name}") from error
            time.sleep(0.5)

    # ------------------------------------------------------------------ training
    def message(self, x: np.ndarray, y: Sequence[int] | np.ndarray, task_hint: str = "") -> pb.TrainRequest:
        """The next TrainRequest of this stream (numbered)."""
        self.sequence_number += 1
        return pb.TrainRequest(stream_id=self.stream_id, sequence_number=self.sequence_number,
                               inputs=encode_inputs(np.asarray(x)), labels=np.asarray(y, np.int64).tolist(),
                               task_hint=task_hint or "")

    def resume(self) -> int:
        """Continue this stream's numbering after the last message the service applied."""
        last, durable = self.position()
        with self._cond:
            self.sequence_number = self.last_acked = max(self.sequence_number, last)
            self._release(durable)
        return self.sequence_number

    def position(self) -> tuple[int, int]:
        """This stream's (last applied, last durable) sequence numbers on the service; (0, 0) if unknown."""
        for position in self.status().streams:
            if position.stream_id == self.stream_id:
                return position.last_sequence_number, position.durable_sequence_number
        return 0, 0

    @property
    def buffered(self) -> int:
        """Messages held for a possible resend (numbered, not durable yet)."""
        return len(self._pending)

    # The buffer: every method below whose name starts with "_" runs with self._cond held.
    def _release(self, durable: int) -> None:
        """Drop the messages the service has made durable (or applied, when it keeps no checkpoints)."""
        self.durable = max(self.durable, durable)
        upto = self.durable if self._durability else max(self.durable, self.last_acked)
        while self._pending and self._pending[0].sequence_number <= upto:
            self._pending.popleft()
        self._cond.notify_all()

    def _restored(self, last: int, durable: int) -> int:
        """After a reconnect: the service's position for this stream; returns where resending starts."""
        if last < self.durable:
            # Acknowledged as durable, then not restored: a damaged checkpoint on the service.
            first = self._pending[0].sequence_number if self._pending else self.sequence_number + 1
            missing = max(0, min(self.durable, first - 1) - last)
            self.lost += missing
            logger.error("the service restored stream %s at message %d, below the %d it had acknowledged as "
                         "durable: %d messages are lost", self.stream_id, last, self.durable, missing)
            self.durable = durable
        # Resend what this client has no ack for (a message the service applied comes back as a
        # duplicate, so every message gets its ack) and, after a restore, what the service lost.
        self.last_acked = min(self.last_acked, last)
        self._release(durable)
        return self.last_acked

    def _want_checkpoint(self) -> None:
        """Ask for a checkpoint in the background when half the buffer is not durable."""
        if (not self._durability or len(self._pending) < max(1, self.max_unsaved // 2)
                or (self._checkpointing is not None and self._checkpointing.is_alive())):
            return
        self.checkpoint_requests += 1
        self._checkpointing = threading.Thread(target=self._checkpoint_for_buffer, name="asp-client-checkpoint",
                                               daemon=True)
        self._checkpointing.start()

    def _checkpoint_for_buffer(self) -> None:  # its own thread, without the lock
        try:
            self.checkpoint()  # releases what it made durable
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                logger.warning("the service keeps no checkpoints: messages are released once applied")
                with self._cond:
                    self._durability = False
                    self._release(0)
            else:  # the stream sees the same trouble and reconnects; the next ack asks again
                logger.warning("checkpoint request failed (%s)", error.code().name)
            with self._cond:
                self._cond.notify_all()

    def _requests(self, source: Iterator, attempt: _Attempt, done: list[bool]) -> Iterator[pb.TrainRequest]:
        sent = attempt.resend_after
        while True:
            pull = False
            with self._cond:
                while True:
                    if attempt.broken:
                        return
                    window = self.last_acked + self._max_in_flight  # the last one that may be sent now
                    msg = next((m for m in self._pending if m.sequence_number > sent), None)
                    if msg is not None:
                        if msg.sequence_number <= window:
                            break
                    elif done[0]:
                        return  # everything sent: half-close, acks keep coming
                    elif len(self._pending) >= self.max_unsaved:
                        self._want_checkpoint()  # full: wait until a checkpoint makes room
                    elif self.sequence_number < window:
                        pull = True
                        break
                    self._cond.wait(0.5)
            if pull:
                # Outside the lock, so that a slow source never holds up acks; one puller at a time
                # (a broken attempt's request thread may still be in here when the next one starts).
                with self._source_lock:
                    item = next(source, None)
                    with self._cond:
                        if item is None:
                            done[0] = True
                        else:
                            self._pending.append(self.message(*item))
                            self.max_buffered = max(self.max_buffered, len(self._pending))
                continue  # send the oldest message this attempt has not sent (not necessarily this one)
            sent = msg.sequence_number
            yield msg

    def train(self, batches: Iterable[tuple], *, max_in_flight: int = 4, retries: int = 5, backoff_s: float = 1.0,
              resume: bool = False) -> Iterator[pb.TrainAck]:
        """Stream ``(x, y)`` or ``(x, y, task_hint)`` batches; yields one TrainAck per message.

        ``x``: uint8 (N, 28, 28) / (N, 1, 28, 28) / (N, 784) or float32 in [0, 1]; ``y``: N labels.
        At most ``max_in_flight`` messages are unacknowledged at a time, and at most
        ``max_unsaved`` (the client's setting) are held, acknowledged or not, until durable.
        On a retryable error the client reconnects (up to ``retries`` times in a row without
        progress), asks the service where the stream stands and resends from there.
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._max_in_flight = max_in_flight
        # A client that has streamed before asks where its stream stands: the replica may have
        # restarted from a checkpoint since, without this stream noticing.
        sync = resume or self.sequence_number > 0
        if resume:
            self.resume()
        source = iter(batches)
        done = [False]
        failures = 0
        resend_after = self.last_acked
        error: grpc.RpcError | None = None
        while True:
            if sync:
                try:
                    last, durable = self.position()
                except grpc.RpcError as e:
                    if e.code() not in RETRYABLE:
                        raise
                    error = e
                    failures = self._backoff(error, failures, retries, backoff_s)
                    continue
                with self._cond:
                    resend_after = self._restored(last, durable)
                sync = False
            attempt = _Attempt(resend_after)
            call = self._stub.Train(self._requests(source, attempt, done), metadata=self.metadata)
            try:
                for ack in call:
                    with self._cond:
                        self.last_acked = max(self.last_acked, ack.last_sequence_number)
                        self._release(ack.durable_sequence_number)
                        self._want_checkpoint()
                    failures = 0
                    yield ack
                with self._cond:
                    if done[0] and self.last_acked >= self.sequence_number:
                        return
                error = None  # the stream ended early: resend what is pending
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    raise
                error = e
            finally:
                with self._cond:
                    attempt.broken = True
                    self._cond.notify_all()
                call.cancel()
            failures = self._backoff(error, failures, retries, backoff_s)
            sync = True  # then ask the service where this stream stands

    def _backoff(self, error: grpc.RpcError | None, failures: int, retries: int, backoff_s: float) -> int:
        """Count a failure (raise after ``retries`` in a row), wait, reconnect; returns the new count."""
        failures += 1
        if failures > retries:
            raise error if error is not None else ConnectionError("Train stream keeps ending early")
        logger.warning("Train stream interrupted (%s); reconnecting (%d messages not durable)",
                       error.code().name if error is not None else "ended early", len(self._pending))
        time.sleep(backoff_s * failures)
        self.reconnect()
        return failures

    def train_batch(self, x: np.ndarray, y: Sequence[int] | np.ndarray, task_hint: str = "") -> pb.TrainAck:
        """One message through the unary TrainBatch RPC (no stream)."""
        return self._stub.TrainBatch(self.message(x, y, task_hint), metadata=self.metadata, timeout=self.timeout_s)

    # ------------------------------------------------------------------ reading and control
    def predict(self, x: np.ndarray, *, top_k: int = 1, attention: str | int | Sequence[int] | None = None,
                png: bool = False) -> pb.PredictReply:
        """Probabilities and top-k; ``attention``: None, "predicted", "runner_up" or label(s)."""
        request = pb.PredictRequest(inputs=encode_inputs(np.asarray(x)), top_k=top_k)
        if attention is None or isinstance(attention, str):
            if attention not in _TARGETS:
                raise ValueError(f"attention must be None, 'predicted', 'runner_up' or label(s), not {attention!r}")
            request.attention.target = _TARGETS[attention]
        else:
            labels = [attention] if isinstance(attention, (int, np.integer)) else list(attention)
            request.attention.target = pb.AttentionRequest.TARGET_LABELS
            request.attention.labels.extend(int(label) for label in labels)
        request.attention.png = png
        return self._read("Predict", self._stub.Predict, request)

    def status(self) -> pb.StatusReply:
        return self._read("GetStatus", self._stub.GetStatus, pb.StatusRequest())

    def _read(self, name: str, rpc, request):
        """Call a read-only RPC; retry transient failures (UNAVAILABLE, INTERNAL, ...) for up to
        ``read_retry_s``. Refusals (INVALID_ARGUMENT, UNAUTHENTICATED, ...) raise at once."""
        deadline = time.monotonic() + self.read_retry_s
        pause = 0.2
        while True:
            try:
                return rpc(request, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() + pause > deadline:
                    raise
                logger.warning("%s failed (%s); retrying", name, error.code().name)
                self.read_retries += 1
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def checkpoint(self) -> pb.CheckpointReply:
        """Ask for a checkpoint now; the messages of this stream it contains are released from the buffer."""
        reply = self._stub.Checkpoint(pb.CheckpointRequest(), metadata=self.metadata, timeout=self.timeout_s)
        for position in reply.streams:
            if position.stream_id == self.stream_id:
                with self._cond:
                    self._release(position.durable_sequence_number)
        return reply

    def reanchor(self) -> pb.ReanchorReply:
        return self._stub.Reanchor(pb.ReanchorRequest(), metadata=self.metadata, timeout=self.timeout_s)

    def health(self) -> pb.HealthReply:
        return self._stub.Health(pb.HealthRequest(), metadata=self.metadata, timeout=min(self.timeout_s, 10.0))

    def accuracy(self, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1000) -> float:
        """Accuracy of the service's current model on a labelled set, through Predict."""
        correct = 0
        for i in range(0, len(y), batch_size):
            reply = self.predict(x[i:i + batch_size])
            predicted = np.array([p.top_labels[0] for p in reply.predictions])
            correct += int((predicted == np.asarray(y[i:i + batch_size])).sum())
        return correct / len(y)
