"""Per-step cost of each strategy against ``vanilla``, measured interleaved.

Timing strategies one after another lets CPU frequency, cache state and other load on the
machine drift between them. Here every learner is built first, warmed up, and then the
``observe`` calls are taken round-robin: in each repeat every strategy does one step on the same
mini-batch, in an order rotated by one position per repeat so that no strategy always runs
first. The result per strategy is the median step time (and quartiles) and the ratio of its
median to vanilla's median, all at the same batch size and ``torch`` thread count.

A timed "step" is the mean over ``block`` consecutive ``observe`` calls on consecutive batches,
so work that a strategy does every few steps (ASP adds its buffered Hebbian terms every 8 steps
at batch 100) is counted in full: the median of single calls would leave it out.

Before the timed steps each learner gets ``warmup`` steps, then ``mark_task_boundary()`` (so
that the consolidation penalty is active, as it is after the first task of a benchmark; the
time of that call is reported separately as ``boundary_s``), then ``warmup`` more steps.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["measure_step_cost"]


def measure_step_cost(make_learner: Callable[[str], object], strategies: Sequence[str],
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                      classes: Sequence[int] | None = None, repeats: int = 200,
                      warmup: int = 20, block: int = 16,
                      progress: Callable[[int], None] | None = None) -> dict:
    """Time ``observe`` per strategy, interleaved; ``vanilla`` is added if missing.

    Parameters
    ----------
    make_learner : callable
        ``make_learner(strategy_name)`` returns a fresh learner.
    strategies : sequence of str
        Strategy names to compare.
    batches : sequence of (x, y)
        Mini-batches cycled through (x float (B, 1, 28, 28), y int64 (B,)).
    classes : list of int, optional
        Class mask passed to ``observe`` (task-incremental scenarios).
    repeats, warmup : int
        Timed rounds, and untimed steps before and after the boundary.
    block : int
        Consecutive ``observe`` calls per strategy and round; a round's time is their mean.
    progress : callable, optional
        Called with 1 after each timed round.

    Returns
    -------
    dict
        ``{"strategies": {name: {"median_s", "p25_s", "p75_s", "mean_s", "ratio_to_vanilla",
        "boundary_s", "n"}}, "repeats", "warmup", "batch_size", "threads"}``.
    """
    if repeats < 1 or warmup < 0 or block < 1:
        raise ValueError("repeats and block must be >= 1 and warmup >= 0")
    if not batches:
        raise ValueError("need at least one batch")
    names = list(dict.fromkeys(["vanilla", *strategies]))
    learners = {s: make_learner(s) for s in names}
    boundary: dict[str, float] = {}
    for s, learner in learners.items():
        for i in range(warmup):
            x, y = batches[i % len(batches)]
            learner.observe(x, y, classes=classes)
        t0 = time.perf_counter()
        learner.mark_task_boundary()
        boundary[s] = time.perf_counter() - t0
        for i in range(warmup):
            x, y = batches[(warmup + i) % len(batches)]
            learner.observe(x, y, classes=classes)
    times: Mapping[str, list[float]] = {s: [] for s in names}
    cpu: Mapping[str, list[float]] = {s: [] for s in names}
    for r in range(repeats):
        chunk = [batches[(r * block + i) % len(batches)] for i in range(block)]
        order = names[r % len(names):] + names[: r % len(names)]
        for s in order:
            c0, t0 = time.thread_time(), time.perf_counter()
            for x, y in chunk:
                learners[s].observe(x, y, classes=classes)
            times[s].append((time.perf_counter() - t0) / block)
            cpu[s].append((time.thread_time() - c0) / block)
        if progress is not None:
            progress(1)
    base = float(np.median(times["vanilla"]))
    cpu_base = float(np.median(cpu["vanilla"]))
    out = {}
    for s in names:
        t = np.asarray(times[s])
        med = float(np.median(t))
        out[s] = {"median_s": med, "p25_s": float(np.percentile(t, 25)),
                  "p75_s": float(np.percentile(t, 75)), "mean_s": float(t.mean()),
                  "ratio_to_vanilla": med / base if base > 0 else float("nan"),
                  "boundary_s": boundary[s], "n": len(t),
                  # CPU time of the calling thread (with --threads 1, all of the step's work):
                  # robust to other processes on a shared machine, unlike wall time.
                  "cpu_median_s": float(np.median(cpu[s])),
                  "cpu_ratio_to_vanilla": float(np.median(cpu[s])) / cpu_base if cpu_base > 0 else float("nan")}
    return {"strategies": out, "repeats": repeats, "warmup": warmup, "block": block,
            "batch_size": int(len(batches[0][1])), "threads": torch.get_num_threads()}
