"""When to take an anchor: task-aware boundaries, or task-free (periodic and/or drift-triggered).

The policy only decides *when*; the learner then asks the strategy for the segment's importance
and hands it to the consolidation penalty.

- ``"task"``: an anchor at every :meth:`~asp_service.learning.OnlineLearner.mark_task_boundary`
  (benchmarks, to compare with EWC and SI as the paper does).
- ``"periodic"``: every ``every`` samples.
- ``"drift"``: when the Page-Hinkley test on the prequential loss fires (see :mod:`.drift`), i.e.
  when the data changed: the weights still hold the old regime (the detector reacts within a few
  batches) and are protected before the new regime overwrites them.
- ``"periodic+drift"``: both; the period restarts at every anchor.
- ``"none"``: never (the penalty stays off).
"""

from __future__ import annotations

from collections.abc import Mapping

from .drift import PageHinkley

MODES = ("task", "periodic", "drift", "periodic+drift", "none")


class AnchoringPolicy:
    def __init__(
        self,
        mode: str = "task",
        *,
        every: int | None = None,
        drift_delta: float = 0.05,
        drift_threshold: float = 2.0,
        drift_min_batches: int = 30,
        min_gap: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"anchoring must be one of {MODES}, got {mode!r}")
        if "periodic" in mode and (every is None or every < 1):
            raise ValueError("periodic anchoring needs anchor_every >= 1 samples")
        if min_gap < 0:
            raise ValueError("min_gap must be >= 0")
        self.mode = mode
        self.every = every
        self.min_gap = int(min_gap)
        self.detector = (
            PageHinkley(delta=drift_delta, threshold=drift_threshold, min_instances=drift_min_batches)
            if "drift" in mode
            else None
        )
        self.since_anchor = 0

    @property
    def task_aware(self) -> bool:
        return self.mode == "task"

    def tick(self, n: int, loss: float) -> tuple[bool, bool]:
        """Account for ``n`` samples whose prequential loss was ``loss``; return (anchor now, drift seen)."""
        self.since_anchor += n
        drift = self.detector.update(loss) if self.detector is not None else False
        anchor = drift and self.since_anchor >= self.min_gap
        if "periodic" in self.mode and self.since_anchor >= self.every:
            anchor = True
        if anchor:
            self.since_anchor = 0
        return anchor, drift

    def anchored(self) -> None:
        """An anchor was taken outside ``tick`` (a boundary or an explicit request)."""
        self.since_anchor = 0

    def state(self) -> dict:
        out = {"mode": self.mode, "samples_since_anchor": self.since_anchor}
        if self.detector is not None:
            out.update(
                detector="page_hinkley",
                statistic=self.detector.statistic,
                threshold=self.detector.threshold,
                detections=self.detector.detections,
            )
        return out

    def state_dict(self) -> dict:
        return {"since_anchor": self.since_anchor, "detector": None if self.detector is None else self.detector.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.since_anchor = int(state["since_anchor"])
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
