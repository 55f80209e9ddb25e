"""Prequential (test-then-train) accuracy over a rolling window of batches.

Each incoming batch is first predicted by the current model (``correct`` of its ``n``
samples), then trained on. The prequential accuracy is the fraction correct over the last
``window`` batches, weighted by sample count:

    acc = sum_{last window batches} correct_b / sum_{last window batches} n_b

Running sums make each update O(1).

Example
-------
>>> p = PrequentialAccuracy(window=2)
>>> p.update(correct=5, n=10)
0.5
>>> p.update(correct=10, n=10)
0.75
>>> p.update(correct=0, n=20)   # the first batch has left the window
0.3333333333333333
>>> round(p.cumulative, 3)
0.375
"""

from __future__ import annotations

from collections import deque

__all__ = ["PrequentialAccuracy"]


class PrequentialAccuracy:
    """Rolling-window test-then-train accuracy.

    Parameters
    ----------
    window : int
        Number of most recent batches the accuracy is computed over (>= 1).
    """

    def __init__(self, *, window: int = 50) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self._batches: deque[tuple[int, int]] = deque()
        self._correct = 0
        self._n = 0
        self._total_correct = 0
        self._total_n = 0

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._reset()

    def update(self, *, correct: int, n: int) -> float:
        """Record one batch (``correct`` of ``n`` right before training); return the accuracy."""
        correct, n = int(correct), int(n)
        if n < 0 or correct < 0 or correct > n:
            raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
        self._batches.append((correct, n))
        self._correct += correct
        self._n += n
        self._total_correct += correct
        self._total_n += n
        if len(self._batches) > self.window:
            c0, n0 = self._batches.popleft()
            self._correct -= c0
            self._n -= n0
        return self.value

    @property
    def value(self) -> float:
        """Accuracy over the window (NaN before any sample)."""
        return self._correct / self._n if self._n else float("nan")

    @property
    def cumulative(self) -> float:
        """Accuracy over everything seen since the start (NaN before any sample)."""
        return self._total_correct / self._total_n if self._total_n else float("nan")

    @property
    def samples(self) -> int:
        """Total samples seen."""
        return self._total_n
