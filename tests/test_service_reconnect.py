"""The client survives a proxy restart mid-stream: it reconnects and resends, nothing is learned twice."""

from __future__ import annotations

import threading

import pytest

from conftest import SERVICE_ARGS

pytestmark = pytest.mark.serve


def test_stream_resumes_after_the_proxy_is_killed(service, client, batches):
    """When Serve's gRPC proxy dies mid-stream, every message is applied exactly once after the reconnect."""
    import ray

    proxies = [a for a in ray.util.list_named_actors(all_namespaces=True)
               if a["name"].startswith("SERVE_PROXY_ACTOR")]
    assert proxies, "no Serve proxy actor found"
    before = client.status().samples_seen
    killed = threading.Event()

    def source():
        for index, batch in enumerate(batches(24, size=100)):
            if index == 8 and not killed.is_set():
                for proxy in proxies:
                    ray.kill(ray.get_actor(proxy["name"], namespace=proxy["namespace"]), no_restart=False)
                killed.set()
            yield batch

    acks = list(client.train(source(), retries=20, backoff_s=0.5))
    assert killed.is_set() and client.reconnects >= 1
    # Messages applied before the proxy died may have lost their acks: the resends come back
    # as duplicates. Every message is acknowledged, and the learner saw each exactly once.
    assert sorted({a.sequence_number for a in acks}) == list(range(1, 25))
    status = client.status()
    assert {s.stream_id: s.last_sequence_number for s in status.streams}[client.stream_id] == 24
    held_out = 24 * 100 // SERVICE_ARGS["holdout_every"]
    assert status.samples_seen - before == 24 * 100 - held_out
