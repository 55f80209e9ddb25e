"""End to end: a real Prometheus scrapes the service; every Grafana dashboard query returns data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.serve, pytest.mark.e2e]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "asp-service.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert reply["status"] == "success", reply
    return [r for r in reply["data"]["result"] if not math.isnan(float(r["value"][1]))]


@pytest.fixture
def prometheus(service, tmp_path):
    """A real Prometheus using deploy/prometheus.yml, pointed at this session's metrics port, scraping every 1 s."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does it)")
    from asp_service.serving.server import free_port

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "asp-service")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service.metrics_port}"]}]
    config["scrape_configs"] = [job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("prometheus did not start: " + (tmp_path / "prometheus.log").read_text()[-2000:])
                time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_dashboard_query_returns_data(service, prometheus, client, batches, digits):
    """While the service trains and predicts, each panel's PromQL answers with at least one series."""
    from clients import LearnerClient

    stop = threading.Event()

    def traffic():
        with LearnerClient(service.target) as reader:
            def stream():
                offset = 0
                while not stop.is_set():
                    yield from batches(1, size=200, offset=offset)
                    offset += 200
                    reader.predict(digits[2][:8])
            for _ in client.train(stream()):
                pass

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    pending = dashboard_queries()
    assert len(pending) >= 12
    deadline = time.monotonic() + 120
    try:
        while pending and time.monotonic() < deadline:
            pending = [expr for expr in pending if not query(prometheus, expr)]
            time.sleep(2)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not pending, f"dashboard queries without data after 120 s: {pending}"
