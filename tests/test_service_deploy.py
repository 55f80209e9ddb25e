"""The deploy/ files agree with the code: Serve configs validate, args are valid ServiceConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def serve_configs() -> dict[str, dict]:
    kuberay = list(yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice.yaml").read_text()))
    service = next(d for d in kuberay if d["kind"] == "RayService")
    return {"serve_config.yaml": yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()),
            "kuberay serveConfigV2": yaml.safe_load(service["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", list(serve_configs()))
def test_serve_config_is_valid_and_points_at_this_code(name):
    from ray.serve.schema import ServeDeploySchema

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.grpc_servicer import SERVICER_FUNCTION
    from asp_service.serving.service import build_learner

    config = serve_configs()[name]
    ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(config)
    assert config["grpc_options"]["grpc_servicer_functions"] == [SERVICER_FUNCTION]
    (app,) = config["applications"]
    assert app["import_path"] == "asp_service.serving.deployment:build_app" and app["route_prefix"]
    build_learner(ServiceConfig(**app["args"]), "cpu")  # hparams included: the learner accepts them


@pytest.mark.parametrize("name", list(serve_configs()))
def test_serve_config_carries_the_latency_settings_of_the_code(name):
    from asp_service.serving.server import SERVE_ENV_VARS, SERVE_LOGGING

    config = serve_configs()[name]
    assert config["controller_options"]["runtime_env"]["env_vars"] == SERVE_ENV_VARS
    (app,) = config["applications"]
    for logging_config in (config["logging_config"], app["logging_config"]):
        assert {k: logging_config[k] for k in SERVE_LOGGING} == SERVE_LOGGING


def test_kuberay_exposes_the_grpc_port():
    service = next(d for d in yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice.yaml").read_text())
                   if d["kind"] == "RayService")
    ports = {p["port"] for p in service["spec"]["serveService"]["spec"]["ports"]}
    assert 9000 in ports


def test_dashboard_covers_the_required_panels():
    titles = " ".join(p["title"].lower() for p in
                      json.loads((DEPLOY / "grafana" / "dashboards" / "asp-service.json").read_text())["panels"])
    for word in ("ingest", "loss", "prequential", "forgetting", "drift", "anchor", "importance", "latency"):
        assert word in titles
