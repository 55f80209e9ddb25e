"""Continual-learning scenarios: Permuted and Split (Fashion-)MNIST.

A :class:`Scenario` is an ordered list of :class:`Task` objects plus the number of output units
the model needs. The scenarios follow Kolouri et al. (2019) and van de Ven & Tolias (2019):

Permuted
    Task 1 is the original images; tasks 2..T apply a fixed random pixel permutation each,
    drawn from ``torch.Generator().manual_seed(seed)`` (the same ``seed`` always gives the same
    permutations). Labels 0-9, 10 outputs, no class mask.

Split
    Five tasks of two classes each. **Default pairs are consecutive: [0,1], [2,3], [4,5], [6,7],
    [8,9]** (the convention of van de Ven & Tolias 2019 and Hsu et al. 2018). The paper's
    example ordering [0,5], [1,6], [2,7], [3,8], [4,9] is available as
    ``pairs="interleaved"``; any explicit list of pairs is accepted too. Three modes:

    - ``"task"`` (task-incremental, multi-head): labels keep their original values, the model
      has 10 outputs and each task exposes ``classes`` (its pair) so the learner masks the
      logits to them in training and evaluation.
    - ``"domain"`` (domain-incremental): labels are mapped to 0/1 within each pair (first
      member -> 0, second -> 1); 2 outputs, no mask.
    - ``"class"`` (class-incremental): original labels, 10 outputs, no mask.

Subsampling (``train_per_task`` / ``test_per_task``) draws a fixed random subset of each task's
split with a generator seeded by ``seed``, for quick runs.

Example
-------
>>> s = split_scenario(dataset="embedded", mode="domain")
>>> s.name, s.n_classes, len(s.tasks), sorted(s.tasks[1].train_y.unique().tolist())
('split-domain-embedded', 2, 5, [0, 1])
>>> p = permuted_scenario(dataset="embedded", n_tasks=3, seed=0)
>>> bool((p.tasks[0].train_x == load_dataset("embedded").train_x).all())
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .sources import ImageDataset, load_dataset

__all__ = [
    "Task", "Scenario", "permuted_scenario", "split_scenario", "make_scenario",
    "SCENARIOS", "SPLIT_MODES", "CONSECUTIVE_PAIRS", "INTERLEAVED_PAIRS",
]

#: Scenario names accepted by :func:`make_scenario` (and ``asp-bench --scenario``).
SCENARIOS = ("permuted", "split-task", "split-domain", "split-class")
SPLIT_MODES = ("task", "domain", "class")
CONSECUTIVE_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
INTERLEAVED_PAIRS = ((0, 5), (1, 6), (2, 7), (3, 8), (4, 9))


@dataclass(frozen=True)
class Task:
    """One task of a scenario.

    Attributes
    ----------
    name : str
        Human-readable name, e.g. ``"perm-2"`` or ``"digits-2-3"``.
    train_x, test_x : torch.Tensor
        uint8 images (N, 28, 28).
    train_y, test_y : torch.Tensor
        int64 labels (N,), already in the scenario's output space.
    classes : list of int or None
        Output units this task may use (task-incremental multi-head mask), else None.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[int] | None = None


@dataclass(frozen=True)
class Scenario:
    """An ordered sequence of tasks sharing one output layer of ``n_classes`` units."""

    name: str
    tasks: list[Task]
    n_classes: int
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, gen: torch.Generator):
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=gen)[:n].sort().values
    return x[idx], y[idx]


def _permute(x: torch.Tensor, perm: torch.Tensor, identity: bool) -> torch.Tensor:
    """Apply a pixel permutation to uint8 images (N, H, W); the identity shares memory."""
    if identity:
        return x
    return x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def _dataset(dataset: str | ImageDataset, data_dir, download) -> ImageDataset:
    if isinstance(dataset, ImageDataset):
        return dataset
    return load_dataset(dataset, data_dir=data_dir, download=download)


def permuted_scenario(*, dataset: str | ImageDataset = "embedded", n_tasks: int = 5,
                      seed: int = 0, train_per_task: int | None = None,
                      test_per_task: int | None = None,
                      data_dir: str | os.PathLike | None = None,
                      download: bool = False) -> Scenario:
    """Permuted (Fashion-)MNIST: task 1 the original images, tasks 2..T fixed permutations.

    Parameters
    ----------
    dataset : str or ImageDataset
        ``"mnist"``, ``"fashion"``, ``"embedded"`` or an already loaded data set.
    n_tasks : int
        Number of tasks T (>= 1).
    seed : int
        Seeds the permutations and the subsampling.
    train_per_task, test_per_task : int, optional
        Use a fixed random subset of this size per task (the same images for every task).
    """
    _check_positive("n_tasks", n_tasks)
    _check_positive("train_per_task", train_per_task)
    _check_positive("test_per_task", test_per_task)
    ds = _dataset(dataset, data_dir, download)
    gen = torch.Generator().manual_seed(int(seed))
    trx, try_ = _subsample(ds.train_x, ds.train_y, train_per_task, gen)
    tex, tey = _subsample(ds.test_x, ds.test_y, test_per_task, gen)
    n_pix = trx.shape[1] * trx.shape[2]
    tasks, perms = [], []
    for t in range(n_tasks):
        perm = torch.arange(n_pix) if t == 0 else torch.randperm(n_pix, generator=gen)
        perms.append(perm)
        tasks.append(Task(name=f"perm-{t + 1}", train_x=_permute(trx, perm, t == 0),
                          train_y=try_, test_x=_permute(tex, perm, t == 0), test_y=tey,
                          classes=None))
    return Scenario(name=f"permuted-{ds.name}", tasks=tasks, n_classes=10,
                    info={"dataset": ds.name, "seed": int(seed), "permutations": perms})


def _resolve_pairs(pairs) -> list[tuple[int, int]]:
    if pairs is None or pairs == "consecutive":
        return [tuple(p) for p in CONSECUTIVE_PAIRS]
    if pairs == "interleaved":
        return [tuple(p) for p in INTERLEAVED_PAIRS]
    if isinstance(pairs, str):
        raise ValueError(f"pairs must be 'consecutive', 'interleaved' or a list, got {pairs!r}")
    out = [tuple(int(c) for c in p) for p in pairs]
    if not out or any(len(p) < 2 for p in out):
        raise ValueError("each task needs at least two classes")
    flat = [c for p in out for c in p]
    if len(set(flat)) != len(flat) or min(flat) < 0 or max(flat) > 9:
        raise ValueError(f"classes must be distinct labels in 0..9, got {out}")
    return out


def split_scenario(*, dataset: str | ImageDataset = "embedded", mode: str = "task",
                   n_tasks: int | None = None,
                   pairs: str | Sequence[Sequence[int]] | None = "consecutive",
                   seed: int = 0, train_per_task: int | None = None,
                   test_per_task: int | None = None,
                   data_dir: str | os.PathLike | None = None,
                   download: bool = False) -> Scenario:
    """Split (Fashion-)MNIST in task-, domain- or class-incremental mode.

    Parameters
    ----------
    mode : {"task", "domain", "class"}
        See the module docstring.
    n_tasks : int, optional
        Use only the first ``n_tasks`` groups (default: all five).
    pairs : "consecutive", "interleaved" or list of class groups
        Which classes form each task. Default [0,1],[2,3],[4,5],[6,7],[8,9].
    seed : int
        Seeds the subsampling (the task contents are otherwise fixed).
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"mode must be one of {SPLIT_MODES}, got {mode!r}")
    _check_positive("n_tasks", n_tasks)
    _check_positive("train_per_task", train_per_task)
    _check_positive("test_per_task", test_per_task)
    groups = _resolve_pairs(pairs)
    if n_tasks is not None:
        if n_tasks > len(groups):
            raise ValueError(f"split scenario has at most {len(groups)} tasks, got {n_tasks}")
        groups = groups[:n_tasks]
    if mode == "domain" and len({len(g) for g in groups}) != 1:
        raise ValueError("domain-incremental mode needs groups of equal size")
    ds = _dataset(dataset, data_dir, download)
    gen = torch.Generator().manual_seed(int(seed))
    tasks = []
    for g in groups:
        cls = torch.tensor(g)

        def select(x: torch.Tensor, y: torch.Tensor, n: int | None):
            keep = torch.isin(y, cls)
            x, y = _subsample(x[keep], y[keep], n, gen)
            if mode == "domain":  # position of the label within its group
                y = (y.unsqueeze(1) == cls.unsqueeze(0)).int().argmax(1).to(torch.int64)
            return x, y

        trx, try_ = select(ds.train_x, ds.train_y, train_per_task)
        tex, tey = select(ds.test_x, ds.test_y, test_per_task)
        prefix = "classes-" if ds.name == "fashion" else "digits-"
        tasks.append(Task(name=prefix + "-".join(map(str, g)), train_x=trx, train_y=try_,
                          test_x=tex, test_y=tey,
                          classes=list(g) if mode == "task" else None))
    n_classes = len(groups[0]) if mode == "domain" else 10
    return Scenario(name=f"split-{mode}-{ds.name}", tasks=tasks, n_classes=n_classes,
                    info={"dataset": ds.name, "mode": mode, "groups": groups})


def make_scenario(name: str, *, dataset: str | ImageDataset = "embedded",
                  n_tasks: int | None = None, seed: int = 0, **kwargs) -> Scenario:
    """Build a scenario by its benchmark name (one of :data:`SCENARIOS`).

    ``n_tasks`` defaults to 5. Other keyword arguments go to :func:`permuted_scenario` or
    :func:`split_scenario`.
    """
    if name == "permuted":
        return permuted_scenario(dataset=dataset, n_tasks=5 if n_tasks is None else n_tasks,
                                 seed=seed, **kwargs)
    if name in ("split-task", "split-domain", "split-class"):
        return split_scenario(dataset=dataset, mode=name.split("-", 1)[1], n_tasks=n_tasks,
                              seed=seed, **kwargs)
    raise ValueError(f"unknown scenario {name!r}; expected one of {SCENARIOS}")
