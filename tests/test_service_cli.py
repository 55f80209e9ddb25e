"""The asp-client commands against the running service (called in process, real gRPC)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.serve


def run(service, capsys, *args: str) -> str:
    from clients.cli import main

    assert main(["--target", service.target, *args]) == 0
    return capsys.readouterr().out


def test_stream_status_checkpoint(service, capsys):
    out = run(service, capsys, "stream", "--scenario", "permuted-mnist", "--tasks", "2", "--train-per-task", "300",
              "--batch-size", "150", "--quiet")
    assert "streamed 600 samples of permuted-embedded" in out and "prequential accuracy" in out
    status = json.loads(run(service, capsys, "status"))
    assert status["strategy"] == "asp" and int(status["samples_seen"]) > 0
    assert "sha256=" in run(service, capsys, "checkpoint")
    assert "anchors taken" in run(service, capsys, "reanchor")


@pytest.mark.parametrize("target", ["predicted", "runner-up", "3,5"])
def test_predict_writes_attention_pngs(service, capsys, digits, tmp_path, target):
    from PIL import Image

    images = []
    for i in range(2):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(digits[2][i]).resize((56, 56)).save(path)  # any size is accepted
        images.append(str(path))
    out = run(service, capsys, "predict", *images, "--attention", str(tmp_path / "att.png"),
              "--attention-target", target, "--scale", "4")
    assert out.count("attention for label") == 2 and "model version" in out
    for i in range(2):
        image = Image.open(tmp_path / f"att-{i}.png")
        assert image.size == (112, 112) and np.asarray(image).max() > 0
    if target == "3,5":
        assert "label 3 ->" in out and "label 5 ->" in out


def test_refused_request_exits_non_zero_with_the_reason(service, capsys, tmp_path):
    from PIL import Image

    from clients.cli import main

    path = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    assert main(["--target", service.target, "predict", str(path), "--top-k", "11"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_serve_set_passes_hyperparameters_and_refuses_bad_ones_before_ray_starts():
    from asp_service.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["serve", "--set", "lam=0.3", "--set", "importance_stride=4"]))
    assert config.hparams == {"lam": 0.3, "importance_stride": 4}
    for bad in (["--set", "nope=1"], ["--set", "importance_stride=0"], ["--set", "lam"]):
        with pytest.raises(SystemExit, match="invalid settings"):
            config_from_args(build_parser().parse_args(["serve", *bad]))
