"""Predictions are served while a training stream runs, from one consistent version each."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.serve


def test_predictions_are_answered_during_a_training_stream(service, client, digits, batches):
    """When a long stream trains, concurrent Predict calls still succeed quickly and see versions advance."""
    from clients import LearnerClient

    start_version = client.status().model_version
    acks = []
    streamer = threading.Thread(target=lambda: acks.extend(client.train(batches(40, size=200))), daemon=True)
    streamer.start()
    probe = digits[2][:32]
    seen, latencies = [], []
    with LearnerClient(service.target) as reader:
        while streamer.is_alive():
            started = time.perf_counter()
            reply = reader.predict(probe, attention="predicted")
            latencies.append(time.perf_counter() - started)
            seen.append(reply.model_version)
            probs = np.array([p.probabilities for p in reply.predictions])
            assert np.allclose(probs.sum(1), 1, atol=1e-4)
    streamer.join(timeout=120)
    assert len(acks) == 40
    end_version = acks[-1].model_version
    during = [v for v in seen if start_version < v < end_version]
    assert len(seen) >= 5 and during, f"no prediction saw a mid-stream version: {seen}"
    assert seen == sorted(seen)  # published versions only move forward
    assert max(latencies) < 5.0, f"a prediction waited {max(latencies):.2f}s behind training"
