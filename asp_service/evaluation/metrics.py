"""Continual-learning metrics on the accuracy matrix.

``R[i, j]`` is the accuracy on task ``j`` after training on task ``i`` (0-based here; T tasks,
so ``R`` is T x T). Following ``docs/ALGORITHM.md`` (Lopez-Paz & Ranzato 2017; Chaudhry et al.
2018), with the last row ``R[T-1]`` the accuracies at the end of the stream:

    ACC          = mean_j R[T-1, j]
    BWT          = mean_{j < T-1} ( R[T-1, j] - R[j, j] )
    forgetting_j = max_{i < T-1} R[i, j] - R[T-1, j]          for j < T-1
    curve[i]     = mean_{j <= i} R[i, j]  (average accuracy over the tasks seen so far)

The maximum in ``forgetting_j`` runs over every earlier row, exactly as written in
ALGORITHM.md (and Chaudhry et al.), including rows i < j taken before task j was trained;
entries that were not measured may be NaN and are skipped. With a single task, BWT and
forgetting are 0 by convention (nothing could be forgotten).

Example
-------
>>> import numpy as np
>>> R = np.array([[0.9, 0.1], [0.6, 0.8]])
>>> round(acc(R), 3), round(bwt(R), 3), forgetting(R).round(3).tolist()
(0.7, -0.3, [0.3])
>>> average_accuracy_curve(R).round(3).tolist()
[0.9, 0.7]
"""

from __future__ import annotations

import numpy as np

__all__ = ["acc", "bwt", "forgetting", "mean_forgetting", "average_accuracy_curve",
           "check_matrix"]


def check_matrix(R) -> np.ndarray:
    """Return ``R`` as a float T x T array; ValueError if it is not square and non-empty."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square T x T with T >= 1, got {R.shape}")
    return R


def acc(R) -> float:
    """Average accuracy over all tasks after the last task: mean_j R[T-1, j]."""
    R = check_matrix(R)
    return float(np.mean(R[-1]))


def bwt(R) -> float:
    """Backward transfer: mean over j < T-1 of R[T-1, j] - R[j, j] (0.0 if T == 1)."""
    R = check_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    j = np.arange(T - 1)
    return float(np.mean(R[-1, j] - R[j, j]))


def forgetting(R) -> np.ndarray:
    """Per-task forgetting, length T-1: max_{i < T-1} R[i, j] - R[T-1, j] for j < T-1."""
    R = check_matrix(R)
    T = R.shape[0]
    if T == 1:
        return np.zeros(0)
    best = np.nanmax(R[:-1, :-1], axis=0)
    return best - R[-1, :-1]


def mean_forgetting(R) -> float:
    """Mean of :func:`forgetting` over tasks j < T-1 (0.0 if T == 1)."""
    f = forgetting(R)
    return float(f.mean()) if f.size else 0.0


def average_accuracy_curve(R) -> np.ndarray:
    """curve[i] = mean_{j <= i} R[i, j]: the average accuracy over tasks seen after task i."""
    R = check_matrix(R)
    return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])
