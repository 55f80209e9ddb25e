"""Run a learner through a continual-learning scenario and measure it.

:func:`run_continual` streams each task's training set once through ``learner.observe``
(test-then-train: ``observe`` reports how many samples of the batch it got right *before*
updating, which feeds :class:`~asp_service.evaluation.prequential.PrequentialAccuracy`), calls
``learner.mark_task_boundary()`` between tasks when ``task_aware`` is True, and after each task
evaluates on every task's test set to fill one row of the accuracy matrix ``R``.

Multi-head (task-incremental) scenarios give each task a ``classes`` mask. The mask is part of
the scenario, so it is passed to ``observe`` and ``predict`` whether or not the run is task
aware: ``task_aware`` only decides whether the learner is told where the boundaries are.
Prediction under a mask is the argmax over the task's classes only.

The learner needs ``observe(x, y, classes=None) -> dict`` with keys ``correct`` and ``n``
(``loss``, ``anchored`` and ``drift`` are recorded when present), ``predict(x, classes=None)``
returning (B, C) scores, and ``mark_task_boundary()``; this is the contract of
:class:`asp_service.learning.OnlineLearner`.

Example
-------
>>> import torch
>>> from asp_service.data import make_scenario
>>> class Majority:   # a stand-in learner that always predicts class 0
...     def observe(self, x, y, classes=None):
...         return {"correct": int((y == 0).sum()), "n": len(y), "loss": 0.0}
...     def predict(self, x, classes=None):
...         return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 2).float()
...     def mark_task_boundary(self):
...         pass
>>> s = make_scenario("split-domain", dataset="embedded", n_tasks=2, train_per_task=100)
>>> r = run_continual(Majority(), s, batch_size=50)
>>> r.R.round(2).tolist(), round(r.acc, 2), r.bwt
([[0.5, 0.5], [0.5, 0.5]], 0.5, 0.0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..data.scenarios import Scenario, Task
from ..data.stream import iterate_task, to_float
from .metrics import acc as _acc
from .metrics import average_accuracy_curve, bwt as _bwt, forgetting as _forgetting
from .prequential import PrequentialAccuracy

__all__ = ["RunEvent", "ContinualResult", "run_continual", "evaluate_task"]


@dataclass
class RunEvent:
    """What a ``callback`` receives.

    ``kind`` is ``"step"`` after each ``observe`` (``out`` is its dict) or ``"task_end"``
    after each task's evaluation (``accuracies`` is that row of ``R``).
    """

    kind: str
    task: int
    step: int
    out: dict | None = None
    accuracies: np.ndarray | None = None


@dataclass
class ContinualResult:
    """Outcome of :func:`run_continual`.

    Attributes
    ----------
    R : ndarray (T, T)
        ``R[i, j]``: accuracy on task j's test set after training on task i.
    acc, bwt : float
        ACC and BWT of ``R`` (see :mod:`asp_service.evaluation.metrics`).
    forgetting : ndarray (T-1,)
        Per-task forgetting; ``mean_forgetting`` its mean.
    curve : ndarray (T,)
        Average accuracy over the tasks seen so far, after each task.
    prequential : list of float
        Rolling-window prequential accuracy after each training batch.
    prequential_samples : list of int
        Samples seen at each entry of ``prequential``.
    losses : list of float
        Training loss reported by each ``observe`` call.
    anchor_steps, drift_steps : list of int
        Samples seen when ``observe`` reported ``anchored`` / ``drift``; anchor_steps also
        lists task boundaries at which ``learner.anchors_taken`` (if present) went up.
    wall_time, train_time, eval_time : float
        Seconds in total, in ``observe`` + ``mark_task_boundary``, and in evaluation.
    """

    scenario: str
    task_names: list[str]
    R: np.ndarray
    acc: float
    bwt: float
    forgetting: np.ndarray
    mean_forgetting: float
    curve: np.ndarray
    prequential: list[float] = field(default_factory=list)
    prequential_samples: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    anchor_steps: list[int] = field(default_factory=list)
    drift_steps: list[int] = field(default_factory=list)
    task_aware: bool = True
    batch_size: int = 100
    wall_time: float = 0.0
    train_time: float = 0.0
    eval_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (arrays become nested lists)."""
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def evaluate_task(learner, task: Task, *, batch_size: int = 1000) -> float:
    """Accuracy of ``learner.predict`` on ``task``'s test set, batched under ``no_grad``.

    With a ``classes`` mask the prediction is the argmax over those classes only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(task.test_y)
    if n == 0:
        return float("nan")
    cls = None if task.classes is None else torch.as_tensor(task.classes, dtype=torch.long)
    correct = 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = to_float(task.test_x[start:start + batch_size])
            y = task.test_y[start:start + batch_size]
            scores = torch.as_tensor(learner.predict(x, classes=task.classes)).cpu()
            if cls is None:
                pred = scores.argmax(1)
            else:
                pred = cls[scores.index_select(1, cls).argmax(1)]
            correct += int((pred == y).sum())
    return correct / n


def run_continual(learner, scenario: Scenario, *, batch_size: int = 100,
                  task_aware: bool = True, eval_batch_size: int = 1000,
                  callback: Callable[[RunEvent], None] | None = None,
                  shuffle_seed: int | None = 0, prequential_window: int = 10
                  ) -> ContinualResult:
    """Train ``learner`` on ``scenario`` task by task (one pass each) and evaluate.

    Parameters
    ----------
    learner
        An :class:`~asp_service.learning.OnlineLearner` or anything with the same
        ``observe`` / ``predict`` / ``mark_task_boundary`` methods.
    scenario : Scenario
        The tasks, in order.
    batch_size : int
        Training mini-batch size (paper: 100).
    task_aware : bool
        Call ``learner.mark_task_boundary()`` between consecutive tasks. False hides the
        boundaries (task-free streaming).
    eval_batch_size : int
        Mini-batch size for test-set evaluation.
    callback : callable, optional
        Called with a :class:`RunEvent` after every training step and every task.
    shuffle_seed : int or None
        Within-task order of task t is seeded with ``shuffle_seed + t``; None keeps the order.
    prequential_window : int
        Number of batches in the rolling prequential window.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(eval_batch_size, int) or eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be a positive integer, got {eval_batch_size!r}")
    if len(scenario.tasks) == 0:
        raise ValueError("scenario has no tasks")
    T = len(scenario.tasks)
    R = np.full((T, T), np.nan)
    preq = PrequentialAccuracy(window=prequential_window)
    result_lists: dict[str, list] = {k: [] for k in
                                     ("prequential", "prequential_samples", "losses",
                                      "anchor_steps", "drift_steps")}
    train_time = eval_time = 0.0
    step = 0
    t_start = time.perf_counter()
    for t, task in enumerate(scenario.tasks):
        seed = None if shuffle_seed is None else int(shuffle_seed) + t
        t0 = time.perf_counter()
        for batch in iterate_task(task, batch_size, shuffle_seed=seed,
                                  task_id=t if task_aware else None):
            out = learner.observe(batch.x, batch.y, classes=task.classes)
            step += 1
            result_lists["prequential"].append(preq.update(correct=out["correct"], n=out["n"]))
            result_lists["prequential_samples"].append(preq.samples)
            result_lists["losses"].append(float(out.get("loss", float("nan"))))
            if out.get("anchored"):
                result_lists["anchor_steps"].append(preq.samples)
            if out.get("drift"):
                result_lists["drift_steps"].append(preq.samples)
            if callback is not None:
                callback(RunEvent("step", t, step, out=out))
        train_time += time.perf_counter() - t0

        t0 = time.perf_counter()
        for j, other in enumerate(scenario.tasks):
            R[t, j] = evaluate_task(learner, other, batch_size=eval_batch_size)
        eval_time += time.perf_counter() - t0
        if callback is not None:
            callback(RunEvent("task_end", t, step, accuracies=R[t].copy()))

        if task_aware and t < T - 1:
            t0 = time.perf_counter()
            before = getattr(learner, "anchors_taken", None)
            learner.mark_task_boundary()
            train_time += time.perf_counter() - t0
            if before is not None and getattr(learner, "anchors_taken", before) != before:
                result_lists["anchor_steps"].append(preq.samples)

    f = _forgetting(R)
    return ContinualResult(
        scenario=scenario.name, task_names=[k.name for k in scenario.tasks], R=R,
        acc=_acc(R), bwt=_bwt(R), forgetting=f,
        mean_forgetting=float(f.mean()) if f.size else 0.0,
        curve=average_accuracy_curve(R), task_aware=bool(task_aware), batch_size=batch_size,
        wall_time=time.perf_counter() - t_start, train_time=train_time, eval_time=eval_time,
        **result_lists)
