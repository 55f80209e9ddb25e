"""Behaviour of ``asp-bench``: argument parsing, configurations, and small end-to-end runs on
the embedded data set (offline) that write JSON and PNG files."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest
import torch

from benchmarks.bench import (_cpu, build_configs, main, parse_args, parse_overrides, parse_sweeps,
                              parse_value)

pytest.importorskip("asp_service.learning")

TINY = ["--dataset", "embedded", "--train-per-task", "200", "--test-per-task", "200",
        "--tasks", "2", "--seeds", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _no_shared_data(monkeypatch):
    monkeypatch.delenv("ASP_DATA_DIR", raising=False)


def test_console_script_declared():
    eps = [e for e in entry_points(group="console_scripts") if e.name == "asp-bench"]
    assert eps and eps[0].value == "benchmarks.bench:main"


def test_values_overrides_and_sweeps_parse():
    assert parse_value("100") == 100 and parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("true") is True and parse_value("none") is None
    assert parse_value("max") == "max"
    assert parse_overrides(["asp.lam=100", "asp.eps=0.5", "*.lr=1e-4"]) == {
        "asp": {"lam": 100, "eps": 0.5}, "all": {"lr": 1e-4}}
    assert parse_sweeps(["asp.lam=10,30", "ewc.lam=1e3"]) == {
        "asp": {"lam": [10, 30]}, "ewc": {"lam": [1000.0]}}
    for bad in (["asp=1"], ["lam=1"], ["asp.lam="]):
        with pytest.raises(ValueError):
            parse_overrides(bad)


def test_sweep_grid_applies_to_named_strategy_only():
    configs = build_configs(["asp", "vanilla"], {"asp": {"eps": 2.0}},
                            {"asp": {"lam": [10, 30], "eps": [1.0, 3.0]}})
    labels = [c.label for c in configs]
    assert labels == ["asp[lam=10,eps=1.0]", "asp[lam=10,eps=3.0]", "asp[lam=30,eps=1.0]",
                      "asp[lam=30,eps=3.0]", "vanilla"]
    assert configs[1].hparams == {"eps": 3.0, "lam": 10}
    with pytest.raises(ValueError):
        build_configs(["asp"], {"ewc": {"lam": 1}}, {})


@pytest.mark.parametrize("argv", [
    ["--task-free"],                                   # task anchoring needs boundaries
    ["--task-free", "--anchoring", "periodic"],        # needs --anchor-every
    ["--anchoring", "drift"],                          # non-task anchoring needs --task-free
    ["--strategies", "asp,nonsense"],
    ["--set", "ewc.lam=10", "--strategies", "asp"],
    ["--attention-figure"],                            # needs --out
    ["--tasks", "0"],
])
def test_bad_command_lines_exit(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_end_to_end_permuted_writes_json_and_figures(tmp_path, capsys):
    """A tiny run writes results.json with R and summary, four PNGs, and prints a table."""
    out = tmp_path / "run"
    assert main([*TINY, "--strategies", "vanilla,asp", "--sweep", "asp.lam=10,100",
                 "--out", str(out), "--attention-figure"]) == 0
    text = capsys.readouterr().out
    assert "after 1" in text and "ACC %" in text and "asp[lam=100]" in text
    report = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in report["summary"]] == ["vanilla", "asp[lam=10]", "asp[lam=100]"]
    run = report["runs"][1]
    assert run["hyperparameters"]["lam"] == 10
    res = run["result"]
    assert len(res["R"]) == 2 and len(res["R"][0]) == 2 and len(res["curve"]) == 2
    assert 0.0 <= res["acc"] <= 1.0 and len(res["prequential"]) == 4
    assert report["environment"]["threads"] == 1 and report["complete"] is True
    env = report["environment"]  # the code that made it: a commit (this test runs in a checkout) or None
    assert env["commit"] is None or len(env["commit"]) == 40 and isinstance(env["dirty"], bool)
    # the CPU that made it (step costs differ between CPUs; ASP's precision follows native bfloat16)
    assert env["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(env["cpu"]["model"], str) and isinstance(env["cpu"]["native_bfloat16"], bool)
    for name in ("average_accuracy.png", "per_task_accuracy.png", "prequential.png",
                 "attention.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_end_to_end_split_task_free_periodic(tmp_path):
    """Task-free, periodic anchoring on a task-incremental split runs and records anchors."""
    out = tmp_path / "tf"
    assert main([*TINY, "--scenario", "split-task", "--strategies", "asp", "--task-free",
                 "--anchoring", "periodic", "--anchor-every", "100", "--out", str(out),
                 "--attention-figure", "--quiet"]) == 0
    report = json.loads((out / "results.json").read_text())
    res = report["runs"][0]["result"]
    assert res["task_aware"] is False
    assert res["task_names"] == ["digits-0-1", "digits-2-3"]
    assert (out / "attention.png").exists()


def test_step_cost_interleaved(tmp_path, capsys):
    out = tmp_path / "cost"
    assert main([*TINY, "--measure", "step-cost", "--strategies", "asp", "--repeats", "6",
                 "--warmup", "2", "--block", "3", "--out", str(out)]) == 0
    report = json.loads((out / "step_cost.json").read_text())["step_cost"]
    assert set(report["strategies"]) == {"vanilla", "asp"}
    # ASP's matrix products alone, timed in the same rounds: a floor below ASP's whole step
    floor = report["probes"]["asp (products only)"]
    asp = report["strategies"]["asp"]
    assert floor["n"] == 6 and 0 < floor["median_s"] < asp["median_s"]
    # the time inside ASP's per-step hook (c-EB + Oja) is part of its step
    assert 0 < asp["after_backward_median_s"] < asp["median_s"]
    assert report["strategies"]["vanilla"]["ratio_to_vanilla"] == pytest.approx(1.0)
    assert report["strategies"]["asp"]["n"] == 6 and report["threads"] == 1 and report["block"] == 3
    printed = capsys.readouterr().out
    assert "x vanilla" in printed and f"CPU: {_cpu()['model']}" in printed
