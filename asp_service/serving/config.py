"""The service's settings: one validated object shared by the CLI, the app builder and tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ServiceConfig(BaseModel):
    """Everything the learner deployment needs; ``serve_config.yaml`` passes these as ``args``."""

    model_config = ConfigDict(extra="forbid")

    # Model and learner
    strategy: str = "asp"
    hidden: list[int] = Field(default_factory=lambda: [400, 400])
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = Field(10, ge=2)
    lr: float = Field(1e-3, gt=0)
    anchoring: str = "periodic+drift"
    anchor_every: int | None = Field(5000, ge=1, description="samples between periodic anchors")
    hparams: dict[str, Any] = Field(default_factory=dict)
    minibatch: int = Field(100, ge=1, description="samples per learner step; messages are split into these")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # Checkpoints
    checkpoint_dir: str | None = None
    checkpoint_every_s: float = Field(60.0, gt=0)
    checkpoint_every_samples: int | None = Field(
        20000, ge=1, description="also checkpoint after this many trained samples (None: by time only)")

    # Live forgetting probes
    probe_size: int = Field(128, ge=1)
    holdout_every: int = Field(10, ge=2)
    max_regimes: int = Field(8, ge=1)
    min_regime_samples: int = Field(500, ge=0)
    evaluate_every_s: float = Field(2.0, gt=0, description="probe evaluation period (skipped while the weights are unchanged)")
    evaluate_every_samples: int = Field(
        20000, ge=1, description="also evaluate after this many trained samples (at full ingest the period is then ~2 s)")
    prequential_window: int = Field(1000, ge=1)

    # Serving
    publish_every_s: float = Field(0.1, ge=0, description="at most this stale, predictions lag training")
    max_samples_per_message: int = Field(4096, ge=1)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    predictors: int = Field(0, ge=0, description="extra predictor replicas that pull weights from the learner")
    predictor_num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(64, ge=2)
    num_cpus: float = Field(1.0, ge=0)

    # Authentication (asp_service.serving.auth): files of bearer tokens, one per line; the
    # environment variables ASP_WRITER_TOKENS / ASP_READER_TOKENS add more. No tokens: open.
    writer_token_file: str | None = None
    reader_token_file: str | None = None

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
