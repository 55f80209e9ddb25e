"""Turn a scenario into a stream of mini-batches, one pass over each task in order.

Images are stored as uint8; each batch is converted to float32 in [0, 1] with shape
(B, 1, 28, 28) only when it is yielded, so a whole scenario costs one byte per pixel in memory.
Within a task the order is a permutation drawn from ``torch.Generator`` seeded with
``shuffle_seed + task_index`` (``shuffle_seed=None`` keeps the stored order). The last batch
of a task may be smaller than ``batch_size``; batches never straddle two tasks.

Example
-------
>>> from asp_service.data import split_scenario
>>> s = split_scenario(dataset="embedded", mode="task", n_tasks=2, train_per_task=250)
>>> batches = list(iterate(s, 100, task_free=False, shuffle_seed=0))
>>> [(tuple(b.x.shape), b.task_id) for b in batches][-2:]
[((100, 1, 28, 28), 1), ((50, 1, 28, 28), 1)]
>>> x, y, task_id = batches[0]
>>> x.dtype, float(x.max()) <= 1.0, s.tasks[task_id].classes
(torch.float32, True, [0, 1])
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import torch

from .scenarios import Scenario, Task

__all__ = ["Batch", "iterate", "iterate_task", "to_float"]


class Batch(NamedTuple):
    """One mini-batch of the stream: unpacks as ``x, y, task_id``.

    ``task_id`` is None when the stream is task-free (task identity hidden); otherwise the
    task's class mask (task-incremental scenarios) is ``scenario.tasks[task_id].classes``.
    """

    x: torch.Tensor
    y: torch.Tensor
    task_id: int | None


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, H, W) -> float32 (B, 1, H, W) in [0, 1]."""
    return x.unsqueeze(1).to(torch.float32).div_(255.0)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def iterate_task(task: Task, batch_size: int, *, shuffle_seed: int | None = 0,
                 task_id: int | None = None) -> Iterator[Batch]:
    """One pass over a single task's training set in mini-batches.

    Parameters
    ----------
    shuffle_seed : int or None
        Seed of the within-task order; None keeps the stored order.
    task_id : int, optional
        Reported in each batch (None for task-free streams).
    """
    _check_batch_size(batch_size)
    n = len(task.train_y)
    if shuffle_seed is None:
        order = None
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(shuffle_seed)))
    for start in range(0, n, batch_size):
        if order is None:
            xb, yb = task.train_x[start:start + batch_size], task.train_y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            xb, yb = task.train_x[idx], task.train_y[idx]
        yield Batch(to_float(xb), yb.clone(), task_id)


def iterate(scenario: Scenario, batch_size: int = 100, *, task_free: bool = True,
            shuffle_seed: int | None = 0) -> Iterator[Batch]:
    """Stream all tasks of ``scenario`` in order, one pass over each training set.

    Parameters
    ----------
    batch_size : int
        Mini-batch size (the paper uses 100).
    task_free : bool
        If True, batches carry ``task_id=None`` (boundaries hidden). If False, they carry the
        task index (0-based); its class mask is ``scenario.tasks[task_id].classes``.
    shuffle_seed : int or None
        Within-task order of task ``t`` uses seed ``shuffle_seed + t``; None: stored order.
    """
    _check_batch_size(batch_size)
    for t, task in enumerate(scenario.tasks):
        seed = None if shuffle_seed is None else int(shuffle_seed) + t
        yield from iterate_task(task, batch_size, shuffle_seed=seed,
                                task_id=None if task_free else t)
