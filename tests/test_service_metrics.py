"""Metrics: Ray's export port serves every documented series (parsed with prometheus_client)."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.serve


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_every_documented_metric_is_exported(service, client, batches, digits):
    """When the service has trained and predicted, every metric of METRICS appears with its labels."""
    from asp_service.serving.metrics import METRICS

    list(client.train(batches(6)))
    client.predict(digits[2][:4])
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(service.metrics_port)
        missing = [name for name, (kind, _, _) in METRICS.items()
                   if (name + "_count" if kind == "histogram" else name) not in samples
                   and not (name == "ray_asp_invalid_requests_total")]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"not exported after 60 s: {missing}"
    for name, (kind, labels, _) in METRICS.items():
        key = name + "_count" if kind == "histogram" else name
        for sample in samples.get(key, []):
            assert {"deployment", "application", *labels} <= set(sample.labels), (name, sample.labels)
    stats = {s.labels["stat"] for s in samples["ray_asp_importance"]}
    assert stats == {"mean", "max", "nonzero_frac"}
