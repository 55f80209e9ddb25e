"""The learner deployment's metrics, through ``ray.serve.metrics``.

Ray exports them on each node's metrics export port with a ``ray_`` prefix; counters get a
``_total`` suffix, histograms ``_bucket``/``_sum``/``_count``. Serve adds the tags
``deployment``, ``replica`` and ``application`` to every one. The names below are the ones
Prometheus sees; ``docs/SERVICE.md`` lists them with their labels and the Grafana dashboard
in ``deploy/grafana/`` queries them.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from asp_service.serving.checkpoint import RestoreReport
from asp_service.serving.protos import learner_pb2 as pb

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]

#: Prometheus name -> (kind, labels besides Serve's deployment/replica/application, meaning)
METRICS = {
    "ray_asp_samples_ingested_total": ("counter", (), "samples trained on"),
    "ray_asp_batches_ingested_total": ("counter", (), "Train messages applied"),
    "ray_asp_training_loss": ("gauge", (), "mean task loss of the last message"),
    "ray_asp_prequential_accuracy": ("gauge", (), "test-then-train accuracy over the rolling window"),
    "ray_asp_drift_detections": ("gauge", (), "drift detections by the learner's detector (cumulative, survives restarts)"),
    "ray_asp_anchors_taken": ("gauge", (), "anchors taken by the learner"),
    "ray_asp_seconds_since_anchor": ("gauge", (), "seconds since the last anchor (-1: none yet)"),
    "ray_asp_importance": ("gauge", ("layer", "stat"), "importance statistics per layer; stat is mean, max or nonzero_frac"),
    "ray_asp_regime_accuracy": ("gauge", ("regime", "kind"), "probe accuracy per regime; kind is current or best"),
    "ray_asp_regime_forgetting": ("gauge", ("regime",), "best minus current probe accuracy per regime"),
    "ray_asp_model_version": ("gauge", (), "learner version (optimizer steps)"),
    "ray_asp_samples_seen": ("gauge", (), "samples the learner has trained on (survives restarts)"),
    "ray_asp_train_latency_seconds": ("histogram", (), "time to validate and apply one Train message"),
    "ray_asp_predict_latency_seconds": ("histogram", (), "time to answer one Predict request"),
    "ray_asp_invalid_requests_total": ("counter", ("rpc", "code"), "requests refused, by status code"),
    "ray_asp_skipped_steps": ("gauge", (), "training steps skipped by the learner's non-finite guard (cumulative, survives restarts)"),
    "ray_asp_checkpoint_restore_total": ("counter", ("source", "reason"),
                                         "replica starts by what was restored: source current, previous or none; "
                                         "reason verified, current_missing, current_corrupt, empty, all_corrupt"),
    "ray_asp_checkpoint_corrupt_files": ("gauge", (), "damaged checkpoint files found (and set aside) at the last start"),
    "ray_asp_checkpoints_written": ("gauge", (), "checkpoints written by this replica process"),
    "ray_asp_checkpoint_age_seconds": ("gauge", (), "seconds since the last checkpoint written or restored (-1: none)"),
    "ray_asp_samples_not_durable": ("gauge", (), "samples trained on that no checkpoint contains yet (lost by a crash)"),
    "ray_asp_checkpoint_write_seconds": ("gauge", (), "duration of the last checkpoint write (serialise + fsync)"),
}


class RayServeMetrics:
    """Implements :class:`asp_service.serving.service.MetricsSink` with ray.serve.metrics."""

    def __init__(self) -> None:
        self.samples = Counter("asp_samples_ingested", "samples trained on")
        self.batches = Counter("asp_batches_ingested", "Train messages applied")
        self.loss = Gauge("asp_training_loss", "mean task loss of the last message")
        self.prequential = Gauge("asp_prequential_accuracy", "prequential accuracy over the rolling window")
        self.drift = Gauge("asp_drift_detections", "drift detections by the learner's detector (cumulative)")
        self.anchors = Gauge("asp_anchors_taken", "anchors taken by the learner")
        self.since_anchor = Gauge("asp_seconds_since_anchor", "seconds since the last anchor (-1: none yet)")
        self.importance = Gauge("asp_importance", "importance statistics per layer", tag_keys=("layer", "stat"))
        self.regime_accuracy = Gauge("asp_regime_accuracy", "probe accuracy per regime", tag_keys=("regime", "kind"))
        self.forgetting = Gauge("asp_regime_forgetting", "best minus current probe accuracy", tag_keys=("regime",))
        self.version = Gauge("asp_model_version", "learner version")
        self.samples_seen = Gauge("asp_samples_seen", "samples the learner has trained on")
        self.train_latency = Histogram("asp_train_latency_seconds", "time to apply one Train message",
                                       boundaries=LATENCY_BUCKETS_S)
        self.predict_latency = Histogram("asp_predict_latency_seconds", "time to answer one Predict request",
                                         boundaries=LATENCY_BUCKETS_S)
        self.invalid = Counter("asp_invalid_requests", "requests refused", tag_keys=("rpc", "code"))
        self.skipped = Gauge("asp_skipped_steps", "training steps skipped by the non-finite guard (cumulative)")
        self.restores = Counter("asp_checkpoint_restore", "replica starts by what was restored",
                                tag_keys=("source", "reason"))
        self.corrupt = Gauge("asp_checkpoint_corrupt_files", "damaged checkpoint files found at the last start")
        self.written = Gauge("asp_checkpoints_written", "checkpoints written by this replica process")
        self.checkpoint_age = Gauge("asp_checkpoint_age_seconds", "seconds since the last checkpoint")
        self.not_durable = Gauge("asp_samples_not_durable", "samples trained on that no checkpoint contains yet")
        self.write_seconds = Gauge("asp_checkpoint_write_seconds", "duration of the last checkpoint write")

    def on_train(self, *, samples: int, loss: float, prequential: float, drift: bool, latency_s: float,
                 version: int) -> None:
        self.samples.inc(samples)
        self.batches.inc(1)
        if samples:
            self.loss.set(loss)
        if prequential >= 0:
            self.prequential.set(prequential)
        self.version.set(version)
        self.train_latency.observe(latency_s)

    def on_predict(self, latency_s: float) -> None:
        self.predict_latency.observe(latency_s)

    def on_invalid(self, rpc: str, code: str) -> None:
        self.invalid.inc(1, tags={"rpc": rpc, "code": code})

    def on_restore(self, report: RestoreReport) -> None:
        self.restores.inc(1, tags={"source": report.source, "reason": report.reason})
        self.corrupt.set(len(report.corrupt))

    def on_tick(self, status: pb.StatusReply) -> None:
        checkpoints = status.checkpoints
        self.corrupt.set(checkpoints.corrupt_files)
        self.written.set(checkpoints.written)
        self.checkpoint_age.set(checkpoints.seconds_since_checkpoint)
        self.not_durable.set(checkpoints.samples_since_checkpoint)
        self.write_seconds.set(checkpoints.last_write_seconds)
        self.version.set(status.model_version)
        self.samples_seen.set(status.samples_seen)
        self.skipped.set(status.skipped_steps)
        self.anchors.set(status.anchors_taken)
        self.drift.set(status.drift.detections)
        self.since_anchor.set(status.seconds_since_anchor)
        if status.prequential_accuracy >= 0:
            self.prequential.set(status.prequential_accuracy)
        for layer in status.importance:
            for stat in ("mean", "max", "nonzero_frac"):
                self.importance.set(getattr(layer, stat), tags={"layer": layer.layer, "stat": stat})
        for regime in status.regimes:
            if regime.current_accuracy < 0:
                continue
            self.regime_accuracy.set(regime.current_accuracy, tags={"regime": regime.name, "kind": "current"})
            self.regime_accuracy.set(regime.best_accuracy, tags={"regime": regime.name, "kind": "best"})
            self.forgetting.set(regime.forgetting, tags={"regime": regime.name})
