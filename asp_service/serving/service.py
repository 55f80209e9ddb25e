"""The learner replica's state and RPC logic, free of Ray so that it can be read and tested alone.

Concurrency model (the deployment calls every method here from worker threads):

- one writer: training steps, re-anchoring, probe evaluation and checkpoint snapshots hold
  ``_write_lock`` (a plain mutex), so the learner only ever sees one mutation at a time;
- readers never take it: predictions use the latest published :class:`Snapshot`, an
  immutable copy of the model made by the writer at most every ``publish_every_s`` (and
  whenever a stream ends), so predictions are never blocked by a training step and always come
  from one consistent set of weights;
- every message is decoded and validated in full before the lock is taken; a rejected
  message raises :class:`InvalidRequest` and changes nothing.

Sequence numbers are kept per ``stream_id``: a message at or below the last applied number is
acknowledged as a duplicate and skipped, which lets a client resend what was not acknowledged
after a reconnect. They travel in checkpoints with the learner, the regimes and the counters.

Durability: every ack also carries the stream's *durable* sequence number, the last one
contained in BOTH checkpoint files on disk (``current.ckpt`` and ``previous.ckpt``): the
smaller of the stream's positions in the two. A replica killed without warning restarts from
its newest good checkpoint, and even when that is ``previous.ckpt`` (the current file damaged)
it has applied at least the messages up to that number; a client that keeps every message
above it and resends them after reconnecting gets each one applied exactly once, and loses
nothing it was told is durable. A message becomes durable after two checkpoint writes (each
write moves the current file to the previous one), so a client buffers up to two checkpoint
intervals. The positions in each file are tracked here; after a restart only the restored
file's are known, and the other file counts as empty until the next write replaces it (durable
is a lower bound). Checkpoints are written every ``checkpoint_every_s`` seconds or
``checkpoint_every_samples`` samples (whichever comes first, by the periodic tick), once more
``checkpoint_every_s`` after the last change so that both files end up holding it, and on demand
(``Checkpoint``, which clients call when too many of their messages are not durable yet); a
request that arrives while a write is running is answered by the next write, and one that
finds everything it has seen in both files by the last checkpoint, without writing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import grpc
import torch

from asp_service.learning import OnlineLearner, mlp
from asp_service.serving.checkpoint import CheckpointInfo, CheckpointStore, RestoreReport
from asp_service.serving.config import ServiceConfig
from asp_service.serving.predictor import Snapshot, predict
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.regimes import RegimeTracker, RollingAccuracy
from asp_service.serving.validation import InvalidRequest, Limits, decode_inputs, decode_labels, invalid

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class MetricsSink(Protocol):
    """What the service reports; :mod:`asp_service.serving.metrics` implements it for Ray."""

    def on_train(self, *, samples: int, loss: float, prequential: float, drift: bool, latency_s: float,
                 version: int) -> None: ...
    def on_predict(self, latency_s: float) -> None: ...
    def on_invalid(self, rpc: str, code: str) -> None: ...
    def on_tick(self, status: pb.StatusReply) -> None: ...
    def on_restore(self, report: RestoreReport) -> None: ...


class NullMetrics:
    def on_train(self, **_: Any) -> None: ...
    def on_predict(self, latency_s: float) -> None: ...
    def on_invalid(self, rpc: str, code: str) -> None: ...
    def on_tick(self, status: pb.StatusReply) -> None: ...
    def on_restore(self, report: RestoreReport) -> None: ...


@dataclass
class StreamState:
    """One stream's position and what the learner did with its samples."""

    last: int = 0       # last sequence number applied
    trained: int = 0    # samples trained on
    held_out: int = 0   # samples kept for the forgetting probes
    messages: int = 0   # messages applied
    skipped: int = 0    # samples refused by the learner's non-finite guard

    @classmethod
    def of(cls, value: Any) -> "StreamState":
        # checkpoints written before the per-stream counters kept only the position
        return cls(last=int(value)) if isinstance(value, int) else cls(**{k: int(v) for k, v in value.items()})


def build_learner(config: ServiceConfig, device: str) -> OnlineLearner:
    torch.manual_seed(config.seed)
    model = mlp(math.prod(config.input_shape), list(config.hidden), config.num_classes)
    kwargs: dict[str, Any] = dict(strategy=config.strategy, device=device, lr=config.lr, anchoring=config.anchoring)
    if config.anchor_every is not None:
        kwargs["anchor_every"] = config.anchor_every
    return OnlineLearner(model, **kwargs, **config.hparams)


class LearnerService:
    """One learner, its forgetting probes, its checkpoints and its published snapshot."""

    def __init__(self, config: ServiceConfig, *, metrics: MetricsSink | None = None):
        self.config = config
        self.metrics = metrics or NullMetrics()
        self.limits = Limits(tuple(config.input_shape), config.num_classes,
                             config.max_samples_per_message, config.max_message_bytes)
        self.device = config.resolved_device()
        self.learner = build_learner(config, self.device)
        self.regimes = RegimeTracker(probe_size=config.probe_size, holdout_every=config.holdout_every,
                                     max_regimes=config.max_regimes, min_regime_samples=config.min_regime_samples)
        self.prequential = RollingAccuracy(config.prequential_window)
        self.streams: dict[str, StreamState] = {}
        # Each stream's position in current.ckpt and in previous.ckpt ({}: absent, or unknown
        # after a restart), and the durable one: the smaller of the two (0 when absent from either).
        self._current_positions: dict[str, int] = {}
        self._previous_positions: dict[str, int] = {}
        self._durable: dict[str, int] = {}
        self.batches_seen = 0
        self._mutations = 0  # messages applied and re-anchors: what a checkpoint may be missing
        # self._mutations as of the state in current.ckpt and in previous.ckpt (-1: unknown);
        # a fresh service has nothing to lose, so both count as holding its (empty) state
        self._checkpointed_mutations = 0
        self._previous_mutations = 0
        self._checkpointed_samples = 0
        self._checkpoints_written = 0
        self._last_write_s = 0.0
        self._last_reply: pb.CheckpointReply | None = None
        self._restore_report = RestoreReport("none", "disabled")
        self._last_anchor_at: float | None = None
        self._write_lock = threading.Lock()
        self._save_lock = threading.Lock()  # one checkpoint write at a time (RPC, periodic, shutdown)
        self._store = CheckpointStore(config.checkpoint_dir) if config.checkpoint_dir else None
        self._last_checkpoint: CheckpointInfo | None = None
        self._last_checkpoint_time: float | None = None
        self._started = time.monotonic()
        self._last_evaluation = 0.0
        self._evaluated_at = 0
        self._evaluated_version = -1  # the model version the probes were last measured at
        self._last_publish = 0.0
        if self._store is not None:
            self._restore()
        self._snapshot = Snapshot.of(self.learner.model, self.learner.version)

    # ----------------------------------------------------------------- training
    def train(self, request: pb.TrainRequest) -> pb.TrainAck:
        """Apply one message (validated first); duplicates are acknowledged and skipped."""
        started = time.perf_counter()
        if request.sequence_number == 0:
            raise invalid("sequence_number: must be set (1, 2, ... per stream)")
        x_np = decode_inputs(request.inputs, self.limits)
        y_np = decode_labels(request.labels, x_np.shape[0], self.config.num_classes)
        stream = request.stream_id or "default"
        with self._write_lock:
            position = self.streams.get(stream) or StreamState()
            if request.sequence_number <= position.last:
                return pb.TrainAck(sequence_number=request.sequence_number, last_sequence_number=position.last,
                                   model_version=self.learner.version, samples_seen=self.learner.samples_seen,
                                   duplicate=True, durable_sequence_number=self._durable.get(stream, 0))
            x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
            if request.task_hint and request.task_hint != self.regimes.task_hint_seen:
                self._evaluate()  # the ending regime's accuracy at its end is its best
            if self.regimes.task_hint(request.task_hint, self.learner.samples_seen):
                # a new task: consolidate the one that ended (task-free learners re-anchor)
                if self.learner.anchoring == "task":
                    self.learner.mark_task_boundary()
                else:
                    self.learner.reanchor()
                self._last_anchor_at = time.monotonic()
            keep = self.regimes.hold_out(x, y)
            x, y = x[keep], y[keep]
            correct, applied, skipped, loss_sum, drift, anchored = 0, 0, 0, 0.0, False, False
            for start in range(0, x.shape[0], self.config.minibatch):
                xb, yb = x[start:start + self.config.minibatch], y[start:start + self.config.minibatch]
                out = self.learner.observe(xb, yb)
                n = int(out["n"])
                if out["skipped"]:  # non-finite loss or gradient: the learner changed nothing
                    skipped += n
                    continue
                correct += int(out["correct"])
                applied += n
                loss_sum += float(out["loss"]) * n
                anchored |= bool(out["anchored"])
                if out["drift"]:
                    drift = True
                    self._evaluate()
                    self.regimes.drift(self.learner.samples_seen)
            if anchored:
                self._last_anchor_at = time.monotonic()
            held_out = int((~keep).sum())
            self.streams[stream] = StreamState(request.sequence_number, position.trained + applied,
                                               position.held_out + held_out, position.messages + 1,
                                               position.skipped + skipped)
            self.batches_seen += 1
            self._mutations += 1
            if applied:
                self.prequential.update(correct, applied)
            if self.learner.samples_seen - self._evaluated_at >= self.config.evaluate_every_samples:
                self._evaluate()
            if time.monotonic() - self._last_publish >= self.config.publish_every_s:
                self._publish()
            ack = pb.TrainAck(
                sequence_number=request.sequence_number, samples_applied=applied,
                last_sequence_number=request.sequence_number, model_version=self.learner.version,
                samples_seen=self.learner.samples_seen, correct=correct,
                loss=loss_sum / applied if applied else 0.0, drift=drift, anchored=anchored,
                held_out=held_out, durable_sequence_number=self._durable.get(stream, 0),
                samples_skipped=skipped,
            )
            prequential = self.prequential.value
        self.metrics.on_train(samples=applied, loss=ack.loss, prequential=prequential, drift=drift,
                              latency_s=time.perf_counter() - started, version=ack.model_version)
        return ack

    def flush(self, evaluate: bool = False) -> None:
        """Publish the latest weights for predictions; with ``evaluate`` (a Train stream ended) also
        measure the probes if the weights changed since they were last measured."""
        with self._write_lock:
            if self._snapshot.version != self.learner.version:
                self._publish()
            if evaluate and self.learner.version != self._evaluated_version:
                self._evaluate()

    def _evaluate(self) -> None:  # holds _write_lock
        """Measure every regime's probe with the learner's current weights."""
        self.regimes.evaluate(self.learner.predict)
        self._evaluated_at = self.learner.samples_seen
        self._evaluated_version = self.learner.version
        self._last_evaluation = time.monotonic()

    def _publish(self) -> None:  # holds _write_lock
        self._snapshot = Snapshot.of(self.learner.model, self.learner.version)
        self._last_publish = time.monotonic()

    # ----------------------------------------------------------------- reading
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def predict(self, request: pb.PredictRequest) -> pb.PredictReply:
        started = time.perf_counter()
        reply = predict(self._snapshot, request, self.limits)
        self.metrics.on_predict(time.perf_counter() - started)
        return reply

    def weights(self, have_version: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        """The published weights for predictor replicas, or None when they have them already."""
        snapshot = self._snapshot
        if snapshot.version == have_version:
            return None
        return snapshot.version, {k: v.cpu() for k, v in snapshot.model.state_dict().items()}

    def status(self) -> pb.StatusReply:
        with self._write_lock:
            learner = self.learner
            drift = learner.drift_state()
            reply = pb.StatusReply(
                samples_seen=learner.samples_seen, batches_seen=self.batches_seen, model_version=learner.version,
                strategy=str(learner.strategy), anchors_taken=learner.anchors_taken,
                seconds_since_anchor=-1.0 if self._last_anchor_at is None else time.monotonic() - self._last_anchor_at,
                prequential_accuracy=self.prequential.value, device=str(learner.device),
                last_checkpoint=self._last_checkpoint.path if self._last_checkpoint else "",
                num_classes=self.config.num_classes, input_shape=list(self.config.input_shape), pid=os.getpid(),
            )
            report = self._restore_report
            reply.checkpoints.restored_from = report.source
            reply.checkpoints.restore_reason = report.reason
            reply.checkpoints.corrupt_files = len(report.corrupt)
            reply.checkpoints.written = self._checkpoints_written
            reply.checkpoints.seconds_since_checkpoint = (
                -1.0 if self._last_checkpoint_time is None else time.monotonic() - self._last_checkpoint_time)
            reply.checkpoints.samples_since_checkpoint = learner.samples_seen - self._checkpointed_samples
            reply.checkpoints.last_write_seconds = self._last_write_s
            for key, value in learner.hyperparameters.items():
                reply.hyperparameters[key] = json.dumps(value, default=str)
            reply.skipped_steps = learner.skipped_steps  # non-finite steps refused by the learner's guard
            reply.drift.detector = str(drift.get("detector", ""))
            reply.drift.detections = int(drift.get("detections", 0))
            for key, value in drift.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "detections":
                    reply.drift.values[key] = float(value)
            for layer, stats in learner.importance_stats().items():
                reply.importance.add(layer=layer, mean=stats["mean"], max=stats["max"],
                                     nonzero_frac=stats["nonzero_frac"])
            for regime in self.regimes.regimes:
                reply.regimes.add(name=regime.name, started_by=regime.started_by,
                                  started_at_sample=regime.started_at_sample, probe_size=regime.probe_size,
                                  current_accuracy=regime.current, best_accuracy=regime.best,
                                  forgetting=regime.forgetting)
            for stream, position in sorted(self.streams.items()):
                reply.streams.add(stream_id=stream, last_sequence_number=position.last,
                                  durable_sequence_number=self._durable.get(stream, 0),
                                  samples_trained=position.trained, samples_held_out=position.held_out,
                                  messages=position.messages, samples_skipped=position.skipped)
        return reply

    # ----------------------------------------------------------------- control
    def reanchor(self) -> pb.ReanchorReply:
        with self._write_lock:
            self.learner.reanchor()
            self._mutations += 1
            self._last_anchor_at = time.monotonic()
            self._publish()
            return pb.ReanchorReply(anchors_taken=self.learner.anchors_taken, model_version=self.learner.version)

    def checkpoint(self) -> pb.CheckpointReply:
        """Write a checkpoint containing everything applied before this call, or reuse the last
        one when both files already hold all of it.

        One write puts what the caller has seen into current.ckpt; it is durable (in both files)
        once a second write has moved that file to previous.ckpt: a caller that needs its
        messages durable asks twice (the second request writes only when needed)."""
        if self._store is None:
            raise InvalidRequest(grpc.StatusCode.FAILED_PRECONDITION,
                                 "checkpoints are off: start the service with a checkpoint directory")
        wanted = self._mutations  # what the caller has seen applied
        with self._save_lock:
            if self._last_reply is not None and min(self._checkpointed_mutations, self._previous_mutations) >= wanted:
                return self._last_reply  # both files hold it: written while this call waited, or nothing new
            started = time.perf_counter()
            with self._write_lock:
                payload = self._payload()  # copies: training goes on while it is written
                version, seen, mutations = self.learner.version, self.learner.samples_seen, self._mutations
            info = self._store.save(payload)  # I/O outside the write lock
            positions = {stream: position["last"] for stream, position in payload["streams"].items()}
            with self._write_lock:
                if info.rotated:  # the former current.ckpt is previous.ckpt now
                    self._previous_positions = self._current_positions
                    self._previous_mutations = self._checkpointed_mutations
                # else: previous.ckpt untouched (there was no current file, or a damaged one)
                self._current_positions = positions
                self._durable = _durable(self._current_positions, self._previous_positions)
                reply = self._reply(info, version, seen)
                self._last_checkpoint, self._last_reply = info, reply
                self._checkpointed_mutations, self._checkpointed_samples = mutations, seen
                self._last_checkpoint_time = time.monotonic()
                self._checkpoints_written += 1
                self._last_write_s = time.perf_counter() - started
        logger.info("checkpoint %s (version %d, sha256 %s, %.3f s)", info.path, version, info.sha256,
                    self._last_write_s)
        return reply

    def checkpoint_due(self) -> bool:
        """Anything not in current.ckpt yet, and ``checkpoint_every_s`` or ``checkpoint_every_samples``
        reached; or everything in current.ckpt but not in previous.ckpt, and ``checkpoint_every_s``
        reached (one more write makes it durable; none once both files hold everything)."""
        if self._store is None:
            return False
        since = time.monotonic() - (self._last_checkpoint_time or self._started)
        if self._mutations != self._checkpointed_mutations:
            every = self.config.checkpoint_every_samples
            return (since >= self.config.checkpoint_every_s
                    or (every is not None and self.learner.samples_seen - self._checkpointed_samples >= every))
        return self._previous_mutations < self._mutations and since >= self.config.checkpoint_every_s

    def tick(self) -> None:
        """Periodic work: publish stale weights, evaluate the probes, checkpoint when due, report gauges."""
        now = time.monotonic()
        with self._write_lock:
            if self._snapshot.version != self.learner.version:
                self._publish()
            # Unchanged weights give the same accuracies: an idle service measures nothing again.
            if (now - self._last_evaluation >= self.config.evaluate_every_s
                    and self.learner.version != self._evaluated_version):
                self._evaluate()
        if self.checkpoint_due():
            self.checkpoint()
        self.metrics.on_tick(self.status())

    def shutdown(self) -> None:
        """Final checkpoint on graceful shutdown (when anything changed since the last one: one
        write, so previous.ckpt keeps the state before it)."""
        if self._store is not None and self._mutations != self._checkpointed_mutations:
            self.checkpoint()

    # ----------------------------------------------------------------- persistence
    def _identity(self) -> dict[str, Any]:
        return {"strategy": self.config.strategy, "hidden": list(self.config.hidden),
                "input_shape": list(self.config.input_shape), "num_classes": self.config.num_classes}

    def _payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "identity": self._identity(), "learner": self.learner.state_dict(),
            "regimes": self.regimes.state_dict(), "batches_seen": self.batches_seen,
            "streams": {stream: asdict(position) for stream, position in self.streams.items()},
        }

    def _reply(self, info: CheckpointInfo, version: int, seen: int,
               positions: dict[str, int] | None = None) -> pb.CheckpointReply:
        """The answer to Checkpoint: each stream's position in ``info``'s file and its durable one."""
        reply = pb.CheckpointReply(path=info.path, sha256=info.sha256, model_version=version, samples_seen=seen,
                                   size_bytes=info.size_bytes)
        for stream, last in sorted((self._current_positions if positions is None else positions).items()):
            reply.streams.add(stream_id=stream, last_sequence_number=last,
                              durable_sequence_number=self._durable.get(stream, 0))
        return reply

    def _restore(self) -> None:
        loaded, report = self._store.restore()
        self._restore_report = report
        self.metrics.on_restore(report)
        if loaded is None:
            logger.info("no usable checkpoint in %s (%s): starting from a fresh model", self._store.directory,
                        report.reason)
            return
        state, info = loaded
        if state.get("format") != CHECKPOINT_FORMAT or state.get("identity") != self._identity():
            raise ValueError(f"checkpoint {info.path} was made for {state.get('identity')}, "
                             f"not for this service's {self._identity()}; use another --checkpoint-dir")
        self.learner.load_state_dict(state["learner"])
        self.regimes.load_state_dict(state["regimes"])
        self.streams = {str(k): StreamState.of(v) for k, v in state["streams"].items()}
        restored = {stream: position.last for stream, position in self.streams.items()}
        # Only the restored file's positions are known. Restored from current.ckpt: previous.ckpt
        # is unknown (not read) and counts as empty until the next write replaces it. Restored from
        # previous.ckpt: current.ckpt was missing or set aside, the next write will not rotate.
        if report.source == "previous":
            self._previous_positions, self._previous_mutations = restored, 0
            self._current_positions, self._checkpointed_mutations = {}, -1
        else:
            self._current_positions, self._checkpointed_mutations = restored, 0
            self._previous_positions, self._previous_mutations = {}, -1
        self._durable = _durable(self._current_positions, self._previous_positions)
        self.batches_seen = int(state["batches_seen"])
        self._last_checkpoint, self._checkpointed_samples = info, self.learner.samples_seen
        self._last_checkpoint_time = time.monotonic()
        self._last_reply = self._reply(info, self.learner.version, self.learner.samples_seen, restored)
        logger.warning("restored %s (%s: %s; version %d, %d samples seen, streams %s)", info.path, report.source,
                       report.reason, self.learner.version, self.learner.samples_seen,
                       {stream: position.last for stream, position in self.streams.items()})


def _durable(current: dict[str, int], previous: dict[str, int]) -> dict[str, int]:
    """Each stream's position contained in both checkpoint files (absent from either: not durable)."""
    return {stream: min(last, previous[stream]) for stream, last in current.items() if stream in previous}
