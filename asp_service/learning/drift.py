r"""Page-Hinkley test for an increase in the mean of the prequential loss (Page 1954; Hinkley 1971).

The task-free learner must notice when the data changes. The signal is the loss of each incoming
batch measured before training on it (test-then-train): while the stream is stationary it falls
or stays flat; when the distribution shifts it jumps. Page-Hinkley is the classic sequential test
for an upward shift of a mean, with constant memory and two interpretable parameters:

.. math::

    \bar x_t = \frac{1}{t}\sum_{i\le t} x_i, \qquad
    m_t = \alpha\, m_{t-1} + (x_t - \bar x_t - \delta), \qquad
    M_t = \min_{i \le t} m_i, \qquad \text{drift if } m_t - M_t > \lambda

``delta`` is the tolerated increase (noise level), ``threshold`` (:math:`\lambda`) the evidence
needed, ``alpha`` a forgetting factor. After a detection the test restarts and waits
``min_instances`` observations before it may fire again. We chose it over the loss-plateau rule of
Aljundi et al. (CVPR 2019) because its state is four numbers (exact checkpointing) and it reacts
within a few batches to the jump a new task causes, and over ADWIN because it is one-sided:
a falling loss (learning) never triggers it.

>>> ph = PageHinkley(delta=0.05, threshold=2.0, min_instances=10)
>>> [ph.update(0.1) for _ in range(50)].count(True), [ph.update(2.3) for _ in range(5)].index(True)
(0, 0)
"""

from __future__ import annotations

from collections.abc import Mapping


class PageHinkley:
    def __init__(self, *, delta: float = 0.05, threshold: float = 2.0, alpha: float = 1.0, min_instances: int = 30):
        if delta < 0 or threshold <= 0 or not 0 < alpha <= 1 or min_instances < 1:
            raise ValueError("need delta >= 0, threshold > 0, 0 < alpha <= 1, min_instances >= 1")
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.min_instances = int(min_instances)
        self.detections = 0
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum = 0.0
        self.min_sum = 0.0

    @property
    def statistic(self) -> float:
        return self.sum - self.min_sum

    def update(self, x: float) -> bool:
        """Add one observation; return True when an increase is detected (the test then restarts)."""
        x = float(x)
        if x != x:  # NaN carries no evidence
            return False
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.sum = self.alpha * self.sum + (x - self.mean - self.delta)
        self.min_sum = min(self.min_sum, self.sum)
        if self.n >= self.min_instances and self.statistic > self.threshold:
            self.detections += 1
            self._reset()
            return True
        return False

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sum": self.sum, "min_sum": self.min_sum, "detections": self.detections}

    def load_state_dict(self, state: Mapping) -> None:
        self.n = int(state["n"])
        self.mean = float(state["mean"])
        self.sum = float(state["sum"])
        self.min_sum = float(state["min_sum"])
        self.detections = int(state["detections"])
