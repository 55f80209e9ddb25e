"""Markdown tables from ``asp-bench`` result folders (the README's figures are pasted from this).

    python -m benchmarks.report docs/results/permuted-mnist docs/results/split-task-mnist
    python -m benchmarks.report --sweep docs/results/sweep-permuted-mnist ...

Each table row is one strategy setting: ACC and BWT in %, mean ± std over seeds (population
std, as in ``results.json``'s summary), the penalty strength used, the number of seeds and
anchors taken, and the median training time of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _pm(pair) -> str:
    mean, std = pair
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def table(folder: Path, *, sweep: bool = False) -> str:
    res = json.loads((folder / "results.json").read_text())
    if not res.get("complete", True):
        raise SystemExit(f"{folder}: results.json is incomplete (a run is still going)")
    args = res["args"]
    runs = {}
    for run in res["runs"]:
        runs.setdefault(run["label"], []).append(run)
    title = f"{args['scenario']} / {args['dataset']}, {args['tasks']} tasks"
    if args.get("task_free"):
        title += f", task-free ({args['anchoring']}" + (f", every {args['anchor_every']}" if args.get("anchor_every") else "") + ")"
    env = res.get("environment", {})
    made = f", commit {env['commit'][:7]}{' + changes' if env.get('dirty') else ''}" if env.get("commit") else ""
    # label the rows with the swept values when asked, or when a strategy has several rows
    sweep = sweep or len({s["strategy"] for s in res["summary"]}) < len(res["summary"])
    lines = [f"**{title}** (`{folder}`{made})", "",
             "| strategy | lam | ACC % | BWT % | seeds | anchors | train s (median) |",
             "|---|---|---|---|---|---|---|"]
    for s in res["summary"]:
        rr = runs[s["label"]]
        hp = rr[0]["hyperparameters"]
        lines.append(
            f"| {s['label'] if sweep else s['strategy']} | {hp['lam']:g} | {_pm(s['acc'])} | {_pm(s['bwt'])} | "
            f"{s['n_seeds']} | {statistics.median(r['anchors_taken'] for r in rr):g} | "
            f"{statistics.median(r['result']['train_time'] for r in rr):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--sweep", action="store_true", help="label rows with the swept values")
    a = p.parse_args(argv)
    print("\n".join(table(f, sweep=a.sweep) for f in a.folders))


if __name__ == "__main__":
    main()
