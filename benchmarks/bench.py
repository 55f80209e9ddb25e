"""``asp-bench``: continual-learning benchmarks of ASP against its baselines.

Runs every (strategy, hyperparameter setting, seed) on a Permuted or Split (Fashion-)MNIST
scenario with :func:`asp_service.evaluation.run_continual`, prints each accuracy matrix and a
table of ACC / BWT / forgetting (mean +- std over seeds), and with ``--out`` writes
``results.json`` and the paper's figures. ``--measure step-cost`` instead times one
``observe`` step per strategy against vanilla, interleaved (see :mod:`benchmarks.step_cost`).

Defaults follow Kolouri et al. (2019): MLP 784-400-400-C with ReLU
(:func:`asp_service.learning.mlp`), Adam with lr 1e-3, batch 100, one pass per task, 5 tasks.
Strategy hyperparameters are the learner's own defaults unless overridden with
``--set strategy.param=value`` (``all.param`` or ``*.param`` applies to every strategy), or
swept with ``--sweep strategy.param=v1,v2,...`` (several ``--sweep`` flags form a grid; the
sweep applies to the named strategy only). For each seed ``s`` the model is initialised with
``torch.manual_seed(s)``, the scenario (permutations, subsample) is built with seed ``s`` and
the within-task order uses shuffle seed ``s``.

Examples::

    asp-bench --scenario permuted --dataset embedded --tasks 3 --train-per-task 1000 --seeds 0
    asp-bench --scenario split-task --dataset mnist --data-dir /work/shared/data \\
        --strategies asp,ewc,si --seeds 0,1,2 --sweep asp.lam=10,30,100 --out results/split
    asp-bench --measure step-cost --strategies asp,ewc,si,mas --threads 1 --out results/cost
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from asp_service.data import SCENARIOS, iterate_task, make_scenario, to_float
from asp_service.evaluation import RunEvent, run_continual
from asp_service.learning.strategies.asp import cpu_has_native_bfloat16
from asp_service.params import parse_value

__all__ = ["main", "parse_args", "parse_overrides", "parse_sweeps", "build_configs", "Config"]

DEFAULT_STRATEGIES = "asp,vanilla,ewc,online_ewc,si,mas"
ANCHORING = ("task", "periodic", "drift", "periodic+drift", "none")


# ---------------------------------------------------------------------------- arguments
def _split_key(item: str, flag: str) -> tuple[str, str, str]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ValueError(f"{flag} expects strategy.param=value, got {item!r}")
    key, value = item.split("=", 1)
    strategy, param = key.strip().split(".", 1)
    if not strategy or not param or not value.strip():
        raise ValueError(f"{flag} expects strategy.param=value, got {item!r}")
    return strategy.strip(), param.strip(), value


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["asp.lam=100", "all.lr=1e-4"]`` -> ``{"asp": {"lam": 100}, "all": {"lr": 1e-4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        s, p, v = _split_key(item, "--set")
        out.setdefault("all" if s == "*" else s, {})[p] = parse_value(v)
    return out


def parse_sweeps(items: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """``["asp.lam=10,30"]`` -> ``{"asp": {"lam": [10, 30]}}``."""
    out: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        s, p, v = _split_key(item, "--sweep")
        values = [parse_value(x) for x in v.split(",") if x.strip()]
        if not values:
            raise ValueError(f"--sweep {item!r} has no values")
        out.setdefault("all" if s == "*" else s, {})[p] = values
    return out


@dataclass
class Config:
    """One strategy with its hyperparameters; ``swept`` holds the values that vary."""

    strategy: str
    hparams: dict[str, Any] = field(default_factory=dict)
    swept: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.swept:
            return self.strategy
        return self.strategy + "[" + ",".join(f"{k}={v}" for k, v in self.swept.items()) + "]"


def build_configs(strategies: Sequence[str], overrides: dict, sweeps: dict) -> list[Config]:
    """Expand strategies x sweep grid into configurations (overrides applied to all)."""
    unknown = (set(overrides) | set(sweeps)) - set(strategies) - {"all"}
    if unknown:
        raise ValueError(f"--set/--sweep name strategies not being run: {sorted(unknown)}")
    configs = []
    for s in strategies:
        base = {**overrides.get("all", {}), **overrides.get(s, {})}
        grid = {**sweeps.get("all", {}), **sweeps.get(s, {})}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            swept = dict(zip(keys, values))
            configs.append(Config(s, {**base, **swept}, swept))
    return configs


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asp-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("scenario")
    g.add_argument("--scenario", choices=SCENARIOS, default="permuted")
    g.add_argument("--dataset", choices=("mnist", "fashion", "embedded"), default="embedded")
    g.add_argument("--data-dir", default=None,
                   help="torchvision-layout data root (default: $ASP_DATA_DIR)")
    g.add_argument("--download", action="store_true",
                   help="let torchvision download missing files into --data-dir")
    g.add_argument("--tasks", type=int, default=5, help="number of tasks")
    g.add_argument("--pairs", choices=("consecutive", "interleaved"), default="consecutive",
                   help="split scenarios: [0,1],[2,3],... or [0,5],[1,6],...")
    g.add_argument("--train-per-task", type=int, default=None,
                   help="subsample each task's training set to N (quick runs)")
    g.add_argument("--test-per-task", type=int, default=None,
                   help="subsample each task's test set to N")
    g = p.add_argument_group("learners")
    g.add_argument("--strategies", type=_name_list, default=_name_list(DEFAULT_STRATEGIES))
    g.add_argument("--seeds", type=_int_list, default=[0, 1, 2])
    g.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="STRATEGY.PARAM=VALUE", help="hyperparameter override (repeatable)")
    g.add_argument("--sweep", dest="sweeps", action="append", default=[],
                   metavar="STRATEGY.PARAM=V1,V2", help="grid over values (repeatable)")
    g.add_argument("--anchoring", choices=ANCHORING, default="task")
    g.add_argument("--anchor-every", type=int, default=None,
                   help="samples between anchors for periodic anchoring")
    g.add_argument("--task-free", action="store_true",
                   help="hide task boundaries (no mark_task_boundary calls)")
    g.add_argument("--device", default=None, help="torch device (default: CUDA if available)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=100)
    g.add_argument("--eval-batch-size", type=int, default=1000)
    g.add_argument("--hidden", type=_int_list, default=[400, 400], help="hidden widths")
    g.add_argument("--prequential-window", type=int, default=10, help="batches")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None, help="write results.json and PNGs here")
    g.add_argument("--attention-figure", action="store_true",
                   help="also plot c-EB maps for a few test inputs (needs --out)")
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    g.add_argument("--no-progress", action="store_true", help="disable the progress bars")
    g.add_argument("--quiet", action="store_true", help="do not print each accuracy matrix")
    g = p.add_argument_group("measurements")
    g.add_argument("--measure", choices=("accuracy", "step-cost"), default="accuracy")
    g.add_argument("--repeats", type=int, default=200, help="step-cost: timed rounds")
    g.add_argument("--warmup", type=int, default=20, help="step-cost: untimed steps")
    g.add_argument("--block", type=int, default=16,
                   help="step-cost: consecutive steps per strategy and round (a round's time is their mean)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (errors exit through argparse)."""
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("tasks", "batch_size", "eval_batch_size", "prequential_window", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("train_per_task", "test_per_task", "anchor_every", "threads"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not a.strategies:
        p.error("--strategies is empty")
    if not a.seeds:
        p.error("--seeds is empty")
    if a.anchoring in ("periodic", "periodic+drift") and a.anchor_every is None:
        p.error(f"--anchoring {a.anchoring} needs --anchor-every N")
    if not a.task_free and a.anchoring != "task":
        p.error(f"--anchoring {a.anchoring} is for task-free runs (the learner takes task "
                "boundaries only with --anchoring task); add --task-free")
    if a.task_free and a.anchoring == "task":
        p.error("--task-free hides the boundaries that --anchoring task needs; "
                "use periodic, drift or periodic+drift")
    if a.attention_figure and a.out is None:
        p.error("--attention-figure needs --out")
    try:
        a.override_map = parse_overrides(a.overrides)
        a.sweep_map = parse_sweeps(a.sweeps)
        a.configs = build_configs(a.strategies, a.override_map, a.sweep_map)
    except ValueError as exc:
        p.error(str(exc))
    try:
        from asp_service.learning import STRATEGIES
    except ImportError:  # learner package not importable: let the run report it
        STRATEGIES = None
    if STRATEGIES is not None:
        bad = [s for s in a.strategies if s not in STRATEGIES]
        if bad:
            p.error(f"unknown strategies {bad}; available: {', '.join(STRATEGIES)}")
    return a


# ---------------------------------------------------------------------------- runs
def make_learner(args: argparse.Namespace, config: Config, n_classes: int, seed: int):
    """A fresh seeded MLP and OnlineLearner for ``config``."""
    from asp_service.learning import OnlineLearner, mlp

    torch.manual_seed(seed)
    model = mlp(784, list(args.hidden), n_classes)
    hp = dict(config.hparams)
    lr = hp.pop("lr", args.lr)
    return OnlineLearner(model, strategy=config.strategy, device=args.device, lr=lr, anchoring=args.anchoring,
                         anchor_every=args.anchor_every, **hp)


def build_scenario(args: argparse.Namespace, seed: int):
    """The scenario for one seed; data problems exit with a message instead of a traceback."""
    extra = {} if args.scenario == "permuted" else {"pairs": args.pairs}
    try:
        return make_scenario(args.scenario, dataset=args.dataset, n_tasks=args.tasks,
                             seed=seed, train_per_task=args.train_per_task,
                             test_per_task=args.test_per_task, data_dir=args.data_dir,
                             download=args.download, **extra)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"asp-bench: {exc}") from exc


def _progress(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=disable,
                mininterval=0.5, dynamic_ncols=True)


def format_matrix(R: np.ndarray, names: Sequence[str]) -> str:
    """The accuracy matrix in percent, rows 'after task i', columns tasks."""
    w = max(7, *(len(n) for n in names)) + 2
    head = " " * 12 + "".join(f"{n:>{w}}" for n in names)
    rows = [f"after {i + 1:<5} " + "".join(f"{100 * v:>{w}.1f}" for v in R[i])
            for i in range(len(R))]
    return "\n".join([head, *rows])


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds of ACC, BWT, forgetting and times, per config label."""
    by_label: dict[str, list[dict]] = {}
    for r in runs:
        by_label.setdefault(r["label"], []).append(r)
    rows = []
    for label, rs in by_label.items():
        def stat(key):
            v = np.array([r["result"][key] for r in rs], dtype=float)
            return float(v.mean()), float(v.std())
        rows.append({"label": label, "strategy": rs[0]["strategy"], "swept": rs[0]["swept"],
                     "n_seeds": len(rs), "acc": stat("acc"), "bwt": stat("bwt"),
                     "mean_forgetting": stat("mean_forgetting"),
                     "train_time": stat("train_time"), "wall_time": stat("wall_time")})
    return rows


def format_summary(rows: list[dict]) -> str:
    w = max(10, *(len(r["label"]) for r in rows))
    lines = [f"{'strategy':<{w}}  {'ACC %':>14}  {'BWT %':>14}  {'forget %':>14}  "
             f"{'train s':>8}  seeds"]
    for r in rows:
        def pm(key):
            m, s = r[key]
            return f"{100 * m:6.2f} ± {100 * s:5.2f}"
        lines.append(f"{r['label']:<{w}}  {pm('acc'):>14}  {pm('bwt'):>14}  "
                     f"{pm('mean_forgetting'):>14}  {r['train_time'][0]:8.1f}  {r['n_seeds']}")
    return "\n".join(lines)


def attention_examples(learner, scenario, n_per_task: int = 2):
    """c-EB maps for the predicted label and the runner-up on a few test images.

    Takes ``n_per_task`` images with different labels from the first and the last task. In a
    permuted scenario, images and maps are returned un-permuted (original pixel layout), so
    that the maps of later tasks are readable; the maps themselves are computed on the
    permuted inputs the network sees.
    """
    last = len(scenario.tasks) - 1
    picks = [0] + ([last] if last > 0 else [])
    perms = scenario.info.get("permutations")
    xs, ys, pred, second, row_perm, names = [], [], [], [], [], []
    with torch.no_grad():
        for t in picks:
            task = scenario.tasks[t]  # batched per task: each task has its own class mask
            labels = task.test_y.numpy()
            _, first = np.unique(labels, return_index=True)  # one image per label, in order
            idx = torch.as_tensor(np.sort(first)[:n_per_task])
            x = to_float(task.test_x[idx])
            probs = torch.as_tensor(learner.predict(x, classes=task.classes)).clone()
            if task.classes is not None:
                keep = torch.zeros(probs.shape[1], dtype=torch.bool)
                keep[torch.as_tensor(task.classes)] = True
                probs[:, ~keep] = -float("inf")
            top = probs.topk(2, dim=1).indices
            xs.append(x)
            ys.append(task.test_y[idx])
            pred += top[:, 0].tolist()
            second += top[:, 1].tolist()
            row_perm += [None if perms is None else perms[t]] * len(idx)
            names += [task.name] * len(idx)
    x, y = torch.cat(xs), torch.cat(ys)
    maps_p = torch.as_tensor(learner.attend(x, torch.tensor(pred))).detach().cpu()
    maps_s = torch.as_tensor(learner.attend(x, torch.tensor(second))).detach().cpu()

    def unpermute(a: torch.Tensor) -> np.ndarray:
        out = a[:, 0].reshape(len(a), -1).clone()
        for r, perm in enumerate(row_perm):
            if perm is not None:  # the task showed pixel perm[k] at position k
                out[r, perm] = a[r, 0].reshape(-1)
        return out.reshape(len(a), *a.shape[2:]).numpy()

    return (unpermute(x), unpermute(maps_p), unpermute(maps_s), pred, second, y.tolist(),
            names)


def check_configs(args: argparse.Namespace, n_classes: int) -> None:
    """Build every configuration's learner once, so that a bad hyperparameter fails at once
    instead of after hours of earlier runs."""
    for config in args.configs:
        try:
            make_learner(args, config, n_classes, 0)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"asp-bench: {config.label}: {exc}") from exc


def run_accuracy(args: argparse.Namespace) -> dict:
    runs: list[dict] = []
    keep: dict[str, Any] = {}
    n_runs = len(args.configs) * len(args.seeds)
    k = 0
    task_names: list[str] = []
    boundaries: list[int] = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        scenario = build_scenario(args, seed)
        build_s = time.perf_counter() - t0
        if seed == args.seeds[0]:
            check_configs(args, scenario.n_classes)
        task_names = [t.name for t in scenario.tasks]
        boundaries = np.cumsum([len(t.train_y) for t in scenario.tasks]).tolist()
        total = sum(-(-len(t.train_y) // args.batch_size) for t in scenario.tasks)
        for config in args.configs:
            k += 1
            learner = make_learner(args, config, scenario.n_classes, seed)
            bar = _progress(total, f"[{k}/{n_runs}] {config.label} seed {seed}",
                            args.no_progress)

            def callback(ev: RunEvent, bar=bar) -> None:
                if ev.kind == "step":
                    bar.update(1)

            try:
                res = run_continual(learner, scenario, batch_size=args.batch_size,
                                    task_aware=not args.task_free,
                                    eval_batch_size=args.eval_batch_size, callback=callback,
                                    shuffle_seed=seed,
                                    prequential_window=args.prequential_window)
            finally:
                bar.close()
            hp = getattr(learner, "hyperparameters", {})
            runs.append({"strategy": config.strategy, "label": config.label,
                         "swept": config.swept, "overrides": config.hparams, "seed": seed,
                         "hyperparameters": _jsonable(hp),
                         "anchors_taken": _jsonable(getattr(learner, "anchors_taken", None)),
                         "scenario_build_s": build_s, "result": res.to_dict()})
            if args.out is not None:  # partial results survive a crash in a later run
                write_json(args.out / "results.json",
                           {"measure": "accuracy", "complete": False, "runs": runs,
                            "args": _cli(args)})
            if not args.quiet:
                print(f"\n== {scenario.name} | {config.label} | seed {seed} | "
                      f"ACC {100 * res.acc:.2f}  BWT {100 * res.bwt:.2f}  "
                      f"train {res.train_time:.1f}s  eval {res.eval_time:.1f}s")
                print(format_matrix(res.R, task_names), flush=True)
            if args.attention_figure and seed == args.seeds[0]:
                keep.setdefault(config.label, (learner, scenario))
    summary = summarize(runs)
    print("\n" + format_summary(summary))
    return {"runs": runs, "summary": summary, "task_names": task_names,
            "boundaries": boundaries, "_learners": keep}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_figures(args: argparse.Namespace, report: dict) -> list[str]:
    from . import plots

    groups: dict[str, list[np.ndarray]] = {}
    for r in report["runs"]:
        groups.setdefault(r["label"], []).append(np.array(r["result"]["R"]))
    title = f"{args.scenario} ({args.dataset}), {len(args.seeds)} seed(s)"
    files = [plots.plot_average_accuracy(groups, args.out / "average_accuracy.png", title=title),
             plots.plot_per_task(groups, args.out / "per_task_accuracy.png",
                                 task_names=report["task_names"], title=title)]
    traces: dict[str, list] = {}
    anchors: dict[str, list[int]] = {}
    for r in report["runs"]:
        res = r["result"]
        traces.setdefault(r["label"], []).append((res["prequential_samples"],
                                                   res["prequential"]))
        anchors.setdefault(r["label"], res["anchor_steps"])
    files.append(plots.plot_prequential(
        traces, args.out / "prequential.png", boundaries=report["boundaries"][:-1],
        anchors=anchors, title=f"{title}: window {args.prequential_window} batches; "
                               "ticks: anchors (first seed)"))
    if args.attention_figure:
        learners = report["_learners"]
        label = next((lb for lb in learners if lb.startswith("asp")), next(iter(learners)))
        learner, scenario = learners[label]
        imgs, mp, ms, pred, second, labels, names = attention_examples(learner, scenario)
        files.append(plots.plot_attention(
            imgs, mp, ms, pred, second, labels, args.out / "attention.png", row_names=names,
            title=f"c-EB after the last task, {label} seed {args.seeds[0]}"
                  + (" (permuted tasks shown un-permuted)" if args.scenario == "permuted" else "")))
    return [str(f) for f in files]


def run_step_cost(args: argparse.Namespace) -> dict:
    from .step_cost import asp_products, measure_step_cost

    scenario = build_scenario(args, args.seeds[0])
    task = scenario.tasks[0]
    batches = [(b.x, b.y) for b, _ in zip(
        iterate_task(task, args.batch_size, shuffle_seed=args.seeds[0]), range(50))
        if len(b.y) == args.batch_size]
    if not batches:
        raise SystemExit("asp-bench: the first task has fewer samples than --batch-size")
    # one timed learner per configuration (a --sweep times every value side by side)
    by_strategy = {c.label: c for c in args.configs}
    if "vanilla" not in by_strategy:
        by_strategy["vanilla"] = Config("vanilla", {**args.override_map.get("all", {})})

    def factory(name: str):
        return make_learner(args, by_strategy[name], scenario.n_classes, args.seeds[0])

    # ASP's matrix products alone, per ASP configuration: the floor of any implementation
    probes = {f"{name} (products only)": asp_products(factory(name), args.batch_size)
              for name, c in by_strategy.items() if c.strategy == "asp"}
    bar = _progress(args.repeats, "step-cost", args.no_progress)
    try:
        res = measure_step_cost(factory, list(by_strategy), batches, classes=task.classes,
                                repeats=args.repeats, warmup=args.warmup, block=args.block,
                                probes=probes, progress=bar.update)
    finally:
        bar.close()
    print(f"\nstep cost per observe(): batch {res['batch_size']}, threads {res['threads']}, "
          f"{res['repeats']} interleaved rounds of {res['block']} steps; CPU: {_cpu_text(_cpu())}")
    rows = [*res["strategies"].items(), *res["probes"].items()]
    w = max(24, *(len(s) + 1 for s, _ in rows))
    print(f"{'strategy':<{w}} {'median ms':>10} {'p25 ms':>8} {'p75 ms':>8} {'x vanilla':>10} "
          f"{'cpu ms':>8} {'cpu x van.':>10} {'boundary ms':>12} {'hook ms':>8}")
    for s, v in rows:
        print(f"{s:<{w}} {1e3 * v['median_s']:10.3f} {1e3 * v['p25_s']:8.3f} "
              f"{1e3 * v['p75_s']:8.3f} {v['ratio_to_vanilla']:10.2f} "
              f"{1e3 * v['cpu_median_s']:8.3f} {v['cpu_ratio_to_vanilla']:10.2f} "
              f"{1e3 * v.get('boundary_s', float('nan')):12.1f} "
              f"{1e3 * v.get('after_backward_median_s', float('nan')):8.3f}")
    return res


def _cli(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in ("configs", "override_map", "sweep_map")}


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temporary file, then rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1))
    os.replace(tmp, path)


def _code_version() -> dict:
    """The commit of the code this process runs, and whether its code (the package, the benchmarks,
    pyproject.toml; not their Markdown) differed from that commit; None for both outside git."""
    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--", "asp_service", "benchmarks", "pyproject.toml",
                                  ":(exclude)*.md"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu() -> dict:
    """What decides the step cost on this CPU: its model, the vector extension torch's kernels use
    and whether it multiplies bfloat16 natively (ASP's ``precision="auto"`` follows that)."""
    model = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor() or "unknown")
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability(),
            "native_bfloat16": cpu_has_native_bfloat16()}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _cpu_text(cpu: dict) -> str:
    return f"{cpu['model']}, {cpu['capability']}, {'' if cpu['native_bfloat16'] else 'no '}native bfloat16"


def _environment(code: dict) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": _cpu(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "argv": sys.argv[1:], **code}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asp-bench`` console script."""
    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:  # leave the process as we found it (main() is also called from tests)
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> int:
    cli = _cli(args)
    code = _code_version()  # at the start: the code that runs, even if the tree changes meanwhile
    started = time.perf_counter()
    if args.measure == "step-cost":
        report: dict = {"measure": "step-cost", "step_cost": run_step_cost(args)}
        name = "step_cost.json"
    else:
        report = run_accuracy(args)
        report["measure"] = "accuracy"
        report["complete"] = True
        name = "results.json"
    report["args"] = cli
    report["environment"] = _environment(code)
    report["elapsed_s"] = time.perf_counter() - started
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.measure == "accuracy":
            report["figures"] = write_figures(args, report)
        report.pop("_learners", None)
        path = args.out / name
        write_json(path, report)
        print(f"\nwrote {path}" + "".join(f"\nwrote {f}" for f in report.get("figures", [])))
    print(f"elapsed {report['elapsed_s']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
