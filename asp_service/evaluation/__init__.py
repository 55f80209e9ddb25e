"""Evaluation for continual learning: accuracy-matrix metrics, prequential accuracy, a runner.

- :mod:`.metrics`: ACC, BWT, forgetting and the average-accuracy curve of ``R``.
- :mod:`.prequential`: rolling-window test-then-train accuracy.
- :mod:`.runner`: :func:`run_continual` streams a scenario through a learner and fills ``R``.
"""

from .metrics import acc, average_accuracy_curve, bwt, forgetting, mean_forgetting
from .prequential import PrequentialAccuracy
from .runner import ContinualResult, RunEvent, evaluate_task, run_continual

__all__ = [
    "acc", "bwt", "forgetting", "mean_forgetting", "average_accuracy_curve",
    "PrequentialAccuracy", "ContinualResult", "RunEvent", "evaluate_task", "run_continual",
]
