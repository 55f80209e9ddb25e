"""Scale-out: predictor replicas answer Predict with weights pulled from the learner."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from conftest import SERVICE_ARGS

pytestmark = pytest.mark.serve


def test_predictor_replicas_follow_the_learners_version(service, digits, batches):
    """When the app runs 2 predictors, Predict replies carry the learner's latest version after training."""
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import deploy
    from clients import LearnerClient

    app = f"predictors-{uuid.uuid4().hex[:6]}"
    config = ServiceConfig(**{**SERVICE_ARGS, "num_cpus": 0.25, "predictor_num_cpus": 0.25, "predictors": 2})
    deploy(config, app_name=app)
    try:
        status = serve.status().applications[app].deployments
        assert status["Predictor"].replica_states.get("RUNNING") == 2
        with LearnerClient(service.target, application=app) as client:
            probe = digits[2][:8]
            before = client.predict(probe, attention="predicted")
            list(client.train(batches(3)))
            version = client.status().model_version
            replies = [client.predict(probe) for _ in range(6)]  # spread over both replicas
            assert {r.model_version for r in replies} == {version} and version > before.model_version
            probs = [np.array([p.probabilities for p in r.predictions]) for r in replies]
            assert all(np.allclose(p, probs[0], atol=1e-6) for p in probs)  # same weights everywhere
            assert len(before.predictions[0].attention.values) == 784
    finally:
        serve.delete(app)
