"""Live forgetting: held-out probes per regime, and a rolling prequential accuracy.

A *regime* is a stretch of the stream between changes. One starts when the service starts
on an empty model, when the drift detector fires (``out["drift"]`` from
``OnlineLearner.observe``) or when the client's task hint changes. Every ``holdout_every``-th
sample is kept out of training and put in the current regime's probe (a ring buffer of the
``probe_size`` most recent such samples). :meth:`RegimeTracker.evaluate` measures accuracy on
every probe; per regime it keeps the current and the best accuracy, and

    forgetting = best accuracy - current accuracy

which is the metric of Chaudhry et al. (2018), measured online on held-out samples instead of
a task's test set. A drift detection less than ``min_regime_samples`` samples into a regime
does not start another one (detectors tend to fire several times around one change).

>>> import torch
>>> tracker = RegimeTracker(probe_size=4, holdout_every=2, min_probe=1)
>>> keep = tracker.hold_out(torch.zeros(6, 1, 2, 2), torch.arange(6))
>>> keep.tolist(), tracker.regimes[0].probe_size
([True, False, True, False, True, False], 3)
>>> tracker.evaluate(lambda x: torch.nn.functional.one_hot(torch.tensor([1, 3, 5]), 6).float())
>>> tracker.regimes[0].current, tracker.regimes[0].forgetting
(1.0, 0.0)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Regime:
    name: str
    started_by: str  # "start", "drift" or "task_hint"
    started_at_sample: int
    capacity: int
    x: torch.Tensor | None = None  # (capacity, *input_shape), filled as a ring
    y: torch.Tensor | None = None
    filled: int = 0
    cursor: int = 0
    current: float = -1.0
    best: float = -1.0

    @property
    def probe_size(self) -> int:
        return self.filled

    @property
    def forgetting(self) -> float:
        return self.best - self.current if self.current >= 0 else 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.x is None:
            self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=torch.float32)
            self.y = torch.zeros(self.capacity, dtype=torch.int64)
        for i in range(x.shape[0]):
            self.x[self.cursor] = x[i]
            self.y[self.cursor] = y[i]
            self.cursor = (self.cursor + 1) % self.capacity
            self.filled = min(self.filled + 1, self.capacity)


@dataclass
class RegimeTracker:
    """Regimes, their probes and their accuracies; plain state, no locking (the caller's job)."""

    probe_size: int = 128
    holdout_every: int = 10
    max_regimes: int = 8
    min_regime_samples: int = 500
    min_probe: int = 16  # a probe is evaluated once it holds this many samples
    regimes: list[Regime] = field(default_factory=list)
    _counter: int = 0
    _samples: int = 0
    _task_hint: str = ""
    _index: int = 0

    def __post_init__(self) -> None:
        if self.probe_size < 1 or self.holdout_every < 2 or self.max_regimes < 1:
            raise ValueError("probe_size >= 1, holdout_every >= 2 and max_regimes >= 1 are required")
        if not self.regimes:
            self._start("start", "", 0)

    @property
    def task_hint_seen(self) -> str:
        return self._task_hint

    @property
    def current_regime(self) -> Regime:
        return self.regimes[-1]

    def _start(self, started_by: str, name: str, at_sample: int) -> None:
        self._index += 1
        self.regimes.append(Regime(name or f"regime-{self._index}", started_by, at_sample, self.probe_size))
        del self.regimes[: -self.max_regimes]

    def task_hint(self, hint: str, samples_seen: int) -> bool:
        """Note the task hint of a message; True when it starts a new regime."""
        if not hint or hint == self._task_hint:
            return False
        first = self._task_hint == "" and self.current_regime.started_by == "start" and self._samples == 0
        self._task_hint = hint
        if first:  # the very first hint names the initial regime instead of starting another
            self.current_regime.name = hint
            return False
        self._start("task_hint", hint, samples_seen)
        return True

    def drift(self, samples_seen: int) -> bool:
        """Note a drift detection; True when it starts a new regime."""
        if samples_seen - self.current_regime.started_at_sample < self.min_regime_samples:
            return False
        self._start("drift", "", samples_seen)
        return True

    def hold_out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Put every ``holdout_every``-th sample in the current probe; the mask of samples to train on."""
        n = x.shape[0]
        positions = torch.arange(self._counter, self._counter + n)
        held = (positions + 1) % self.holdout_every == 0
        self._counter += n
        if held.any():
            self.current_regime.add(x[held], y[held])
        self._samples += n
        return ~held

    def evaluate(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Measure every probe with ``predict`` (inputs -> class scores)."""
        for regime in self.regimes:
            if regime.filled < self.min_probe:
                continue
            scores = predict(regime.x[: regime.filled])
            accuracy = float((scores.argmax(dim=1) == regime.y[: regime.filled]).float().mean())
            regime.current = accuracy
            regime.best = max(regime.best, accuracy)

    def state_dict(self) -> dict[str, Any]:
        return {
            "counter": self._counter, "samples": self._samples, "task_hint": self._task_hint, "index": self._index,
            "regimes": [
                {"name": r.name, "started_by": r.started_by, "started_at_sample": r.started_at_sample,
                 "x": r.x, "y": r.y, "filled": r.filled, "cursor": r.cursor, "current": r.current, "best": r.best}
                for r in self.regimes
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counter, self._samples = int(state["counter"]), int(state["samples"])
        self._task_hint, self._index = str(state["task_hint"]), int(state["index"])
        self.regimes = [
            Regime(r["name"], r["started_by"], int(r["started_at_sample"]), self.probe_size, r["x"], r["y"],
                   int(r["filled"]), int(r["cursor"]), float(r["current"]), float(r["best"]))
            for r in state["regimes"]
        ]


class RollingAccuracy:
    """Prequential accuracy over the last ``window`` samples (test-then-train counts per batch)."""

    def __init__(self, window: int = 1000):
        self.window = window
        self._batches: deque[tuple[int, int]] = deque()
        self._correct = 0
        self._n = 0

    def update(self, correct: int, n: int) -> None:
        self._batches.append((correct, n))
        self._correct += correct
        self._n += n
        while self._batches and self._n - self._batches[0][1] >= self.window:
            c, m = self._batches.popleft()
            self._correct -= c
            self._n -= m

    @property
    def value(self) -> float:
        return self._correct / self._n if self._n else -1.0
