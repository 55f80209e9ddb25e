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

``probes`` are further callables timed in the same rounds (``block`` calls each); the benchmark
uses one for the matrix products that ASP's rule needs (:func:`asp_products`), which bounds from
below what an implementation of that rule with dense products can cost at the same precision.

Before the timed steps each learner gets ``warmup`` steps, then ``mark_task_boundary()`` (so
that the consolidation penalty is active, as it is after the first task of a benchmark; the
time of that call is reported separately as ``boundary_s``), then ``warmup`` more steps.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["measure_step_cost", "asp_products"]


def measure_step_cost(make_learner: Callable[[str], object], strategies: Sequence[str],
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                      classes: Sequence[int] | None = None, repeats: int = 200,
                      warmup: int = 20, block: int = 16,
                      probes: Mapping[str, Callable[[], object]] | None = None,
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
    probes : mapping of str to callable, optional
        Timed like a strategy (``block`` calls per round, in the rotation), with no learner.
    progress : callable, optional
        Called with 1 after each timed round.

    Returns
    -------
    dict
        ``{"strategies": {name: {"median_s", "p25_s", "p75_s", "mean_s", "ratio_to_vanilla",
        "boundary_s", "n", "cpu_median_s", "cpu_ratio_to_vanilla", "after_backward_median_s"}},
        "probes": {name: the same without "boundary_s" and "after_backward_median_s"}, "repeats",
        "warmup", "block", "batch_size", "threads"}``. ``after_backward_median_s`` is the time per
        step inside the strategy's per-step hook (ASP: c-EB and Oja's update).
    """
    if repeats < 1 or warmup < 0 or block < 1:
        raise ValueError("repeats and block must be >= 1 and warmup >= 0")
    if not batches:
        raise ValueError("need at least one batch")
    names = list(dict.fromkeys(["vanilla", *strategies]))
    learners = {s: make_learner(s) for s in names}
    probes = dict(probes or {})
    if set(probes) & set(names):
        raise ValueError("a probe may not share a strategy's name")
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
    for probe in probes.values():
        for _ in range(warmup):
            probe()
    # Time spent in the strategy's per-step hook (ASP: c-EB and Oja), inside the same rounds.
    in_hook = {s: _time_hook(learner._strategy) for s, learner in learners.items()}
    names += list(probes)
    times: Mapping[str, list[float]] = {s: [] for s in names}
    cpu: Mapping[str, list[float]] = {s: [] for s in names}
    hook: Mapping[str, list[float]] = {s: [] for s in learners}
    for r in range(repeats):
        chunk = [batches[(r * block + i) % len(batches)] for i in range(block)]
        order = names[r % len(names):] + names[: r % len(names)]
        for s in order:
            c0, t0 = time.thread_time(), time.perf_counter()
            if s in probes:
                for _ in chunk:
                    probes[s]()
            else:
                in_hook[s][0] = 0.0
                for x, y in chunk:
                    learners[s].observe(x, y, classes=classes)
                hook[s].append(in_hook[s][0] / block)
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
                  "n": len(t),
                  **({} if s in probes else {"boundary_s": boundary[s],
                                             "after_backward_median_s": float(np.median(hook[s]))}),
                  # CPU time of the calling thread (with --threads 1, all of the step's work):
                  # robust to other processes on a shared machine, unlike wall time.
                  "cpu_median_s": float(np.median(cpu[s])),
                  "cpu_ratio_to_vanilla": float(np.median(cpu[s])) / cpu_base if cpu_base > 0 else float("nan")}
    return {"strategies": {s: v for s, v in out.items() if s not in probes},
            "probes": {s: v for s, v in out.items() if s in probes},
            "repeats": repeats, "warmup": warmup, "block": block,
            "batch_size": int(len(batches[0][1])), "threads": torch.get_num_threads()}


def _time_hook(strategy) -> list[float]:
    """Wrap ``strategy.after_backward`` so that its time adds up in the returned one-item list."""
    total = [0.0]
    inner = strategy.after_backward

    def timed(ctx):
        t0 = time.perf_counter()
        try:
            return inner(ctx)
        finally:
            total[0] += time.perf_counter() - t0

    strategy.after_backward = timed
    return total


def asp_products(learner, batch_size: int) -> Callable[[], None]:
    """The matrix products ASP's rule needs per step on ``learner``'s MLP, and nothing else.

    Per Linear layer below the top, with ``B = batch_size``: ``Z = a W+^T`` and ``(P/Z) W+``
    (excitation backprop) and the Hebbian ``Pc_post^T Pc_pre`` (Oja), each ``B x in x out``
    multiply-adds; at the top layer the same three with the stacked ``[W+; W-]`` and the
    one-hot label. They run at ASP's precision (``bfloat16`` products where the learner chose
    it) on fixed operands of the right shapes, so the time is that of the products alone: an
    implementation with dense products and no other work at all would still spend it (only
    skipping structure, such as input columns that are zero across a batch, could do less).
    With ``importance_stride = k`` the products run on the ``ceil(B / k)`` samples ASP attends to.
    """
    from asp_service.learning.strategies.asp import PRECISIONS

    linears = [m for m in learner.model.modules() if isinstance(m, torch.nn.Linear)]
    dtype = PRECISIONS[learner.hyperparameters["precision"]] or linears[0].weight.dtype
    rows = len(range(0, batch_size, learner.hyperparameters.get("importance_stride", 1)))
    gen = torch.Generator().manual_seed(0)
    ops = []
    for i, layer in enumerate(linears):
        w = layer.weight.detach()
        top = i == len(linears) - 1
        if top:
            w = torch.cat([w.clamp(min=0), (-w).clamp(min=0)])
        else:
            w = w.clamp(min=0).to(dtype)
        out_f, in_f = w.shape
        a = torch.rand(rows, in_f, generator=gen).to(w.dtype)
        r = torch.rand(rows, out_f, generator=gen).to(w.dtype)
        post_t = torch.rand(out_f // (2 if top else 1), rows, generator=gen).to(w.dtype)
        ops.append((a, w, r, post_t))

    def run() -> None:
        for a, w, r, post_t in ops:
            a @ w.t()
            r @ w
            post_t @ a

    return run
