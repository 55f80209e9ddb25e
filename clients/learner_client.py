"""Typed Python client for the ``asp.v1.Learner`` gRPC service.

:meth:`LearnerClient.train` streams batches of samples, numbers each message (per
``stream_id``), keeps the messages not yet acknowledged and, when the connection drops
(UNAVAILABLE and similar codes), reconnects and resends them: the service skips any it had
already applied (it acknowledges them as duplicates), so nothing is learned twice and nothing
is lost. ``resume=True`` continues the numbering of a stream the service already knows, e.g.
after the client process itself restarted.

Example (needs a running service)::

    with LearnerClient("127.0.0.1:9000") as client:
        for ack in client.train((x[i:i + 500], y[i:i + 500]) for i in range(0, len(y), 500)):
            print(ack.sequence_number, ack.correct / max(ack.samples_applied, 1))
        reply = client.predict(x[:4], top_k=3, attention="predicted", png=True)
"""

from __future__ import annotations

import logging
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

    def __init__(self) -> None:
        self.broken = False


class LearnerClient:
    """A connection to the service; thread-safe for unary calls, one ``train`` stream at a time."""

    def __init__(self, target: str = "127.0.0.1:9000", *, application: str = "asp", stream_id: str | None = None,
                 timeout_s: float = 60.0):
        self.target = target
        self.metadata = (("application", application),)
        self.stream_id = stream_id or f"client-{uuid.uuid4().hex[:12]}"
        self.timeout_s = timeout_s
        self.sequence_number = 0  # last one given to a message
        self.last_acked = 0
        self.reconnects = 0
        self._cond = threading.Condition()
        self._pending: deque[pb.TrainRequest] = deque()
        self._connect()

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> None:
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ])
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
        for position in self.status().streams:
            if position.stream_id == self.stream_id:
                self.sequence_number = self.last_acked = max(self.sequence_number, position.last_sequence_number)
        return self.sequence_number

    def _requests(self, source: Iterator, attempt: _Attempt, max_in_flight: int,
                  done: list[bool]) -> Iterator[pb.TrainRequest]:
        sent = 0
        while True:
            with self._cond:
                while True:
                    if attempt.broken:
                        return
                    msg = next((m for m in self._pending if m.sequence_number > sent), None)
                    if msg is not None:
                        break
                    if done[0]:
                        return  # everything sent: half-close, acks keep coming
                    if len(self._pending) < max_in_flight:
                        item = next(source, None)
                        if item is None:
                            done[0] = True
                            continue
                        msg = self.message(*item)
                        self._pending.append(msg)
                        break
                    self._cond.wait(0.5)
            sent = msg.sequence_number
            yield msg

    def train(self, batches: Iterable[tuple], *, max_in_flight: int = 4, retries: int = 5,
              backoff_s: float = 1.0, resume: bool = False) -> Iterator[pb.TrainAck]:
        """Stream ``(x, y)`` or ``(x, y, task_hint)`` batches; yields one TrainAck per message.

        ``x``: uint8 (N, 28, 28) / (N, 1, 28, 28) / (N, 784) or float32 in [0, 1]; ``y``: N labels.
        At most ``max_in_flight`` messages are unacknowledged at a time. On a retryable error the
        client reconnects (up to ``retries`` times in a row without progress) and resends them.
        """
        if resume:
            self.resume()
        source = iter(batches)
        done = [False]
        failures = 0
        while True:
            attempt = _Attempt()
            call = self._stub.Train(self._requests(source, attempt, max_in_flight, done), metadata=self.metadata)
            try:
                for ack in call:
                    with self._cond:
                        while self._pending and self._pending[0].sequence_number <= ack.sequence_number:
                            self._pending.popleft()
                        self.last_acked = max(self.last_acked, ack.last_sequence_number)
                        self._cond.notify_all()
                    failures = 0
                    yield ack
                with self._cond:
                    if done[0] and not self._pending:
                        return
                error: grpc.RpcError | None = None  # the stream ended early: resend what is pending
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    raise
                error = e
            finally:
                with self._cond:
                    attempt.broken = True
                    self._cond.notify_all()
                call.cancel()
            failures += 1
            if failures > retries:
                raise error if error is not None else ConnectionError("Train stream keeps ending early")
            logger.warning("Train stream interrupted (%s); reconnecting and resending %d messages",
                           error.code().name if error is not None else "ended early", len(self._pending))
            time.sleep(backoff_s * failures)
            self.reconnect()

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
        return self._stub.Predict(request, metadata=self.metadata, timeout=self.timeout_s)

    def status(self) -> pb.StatusReply:
        return self._stub.GetStatus(pb.StatusRequest(), metadata=self.metadata, timeout=self.timeout_s)

    def checkpoint(self) -> pb.CheckpointReply:
        return self._stub.Checkpoint(pb.CheckpointRequest(), metadata=self.metadata, timeout=self.timeout_s)

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
