"""Figures for ``asp-bench`` (matplotlib, Agg backend: no display needed).

- :func:`plot_average_accuracy`: average accuracy over the tasks seen so far against the number
  of tasks, mean +- std over seeds, one line per strategy (Kolouri et al. 2019, Figs. 4 and 6).
- :func:`plot_per_task`: accuracy on each task j after training each later task i, one panel
  per task (Figs. 5 and 7).
- :func:`plot_prequential`: rolling prequential (test-then-train) accuracy against samples
  seen, with task boundaries and the first seed's anchors marked.
- :func:`plot_attention`: test inputs next to their c-EB maps for the predicted label and the
  runner-up (Fig. 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_average_accuracy", "plot_per_task", "plot_attention", "plot_prequential"]


def _stack(matrices: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(m, dtype=float) for m in matrices])


def plot_average_accuracy(groups: Mapping[str, Sequence[np.ndarray]], path: Path, *,
                          title: str = "") -> Path:
    """``groups`` maps a label to the accuracy matrices R of its seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, mats in groups.items():
        Rs = _stack(mats)
        T = Rs.shape[1]
        curves = np.stack([[R[i, : i + 1].mean() for i in range(T)] for R in Rs]) * 100
        x = np.arange(1, T + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(x, mean, marker="o", label=label)
        if len(Rs) > 1:
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("number of tasks")
    ax.set_ylabel("average accuracy over tasks seen (%)")
    ax.set_xticks(np.arange(1, T + 1))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_task(groups: Mapping[str, Sequence[np.ndarray]], path: Path, *,
                  task_names: Sequence[str] | None = None, title: str = "") -> Path:
    """One panel per task j: R[i, j] for i >= j, mean +- std over seeds, one line per label."""
    first = _stack(next(iter(groups.values())))
    T = first.shape[1]
    fig, axes = plt.subplots(1, T, figsize=(2.6 * T, 3), sharey=True, squeeze=False)
    for j, ax in enumerate(axes[0]):
        for label, mats in groups.items():
            Rs = _stack(mats)[:, j:, j] * 100
            x = np.arange(j + 1, T + 1)
            ax.errorbar(x, Rs.mean(0), yerr=Rs.std(0) if len(Rs) > 1 else None, marker="o",
                        ms=3, capsize=2, label=label)
        ax.set_title(task_names[j] if task_names else f"task {j + 1}", fontsize=9)
        ax.set_xlabel("after task")
        ax.set_xticks(np.arange(1, T + 1))
        ax.set_xlim(0.5, T + 0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_attention(images: np.ndarray, maps_pred: np.ndarray, maps_second: np.ndarray,
                   pred: Sequence[int], second: Sequence[int], labels: Sequence[int],
                   path: Path, *, row_names: Sequence[str] | None = None,
                   title: str = "") -> Path:
    """Rows: examples; columns: input, c-EB map for the predicted label, for the runner-up.

    ``images`` and the maps are (N, 28, 28) arrays; ``row_names`` (e.g. the task) prefix the
    input's title.
    """
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for r in range(n):
        prefix = f"{row_names[r]}, " if row_names else ""
        panels = [(images[r], f"{prefix}label {labels[r]}", "gray"),
                  (maps_pred[r], f"c-EB, predicted {pred[r]}", "jet"),
                  (maps_second[r], f"c-EB, runner-up {second[r]}", "jet")]
        for c, (img, name, cmap) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap=cmap, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_prequential(traces: Mapping[str, Sequence[tuple[Sequence[int], Sequence[float]]]],
                     path: Path, *, boundaries: Sequence[int] = (),
                     anchors: Mapping[str, Sequence[int]] | None = None,
                     title: str = "") -> Path:
    """``traces`` maps a label to (samples_seen, accuracy) pairs, one per seed; seeds of equal
    length are averaged. ``boundaries``: samples seen at each task end (dashed lines);
    ``anchors``: samples seen when a label's learner anchored (ticks along the bottom)."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, (label, runs) in enumerate(traces.items()):
        xs = np.asarray(runs[0][0])
        ys = [np.asarray(r[1], dtype=float) for r in runs if len(r[1]) == len(xs)]
        line, = ax.plot(xs, np.mean(ys, axis=0) * 100, lw=1, label=label)
        if anchors and anchors.get(label):
            ax.plot(anchors[label], np.full(len(anchors[label]), 2.0 + 3 * k), "|",
                    color=line.get_color(), ms=8)
    for b in boundaries:
        ax.axvline(b, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("samples seen")
    ax.set_ylabel("prequential accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
