"""Soak: several streaming and predicting clients against a local service for a bounded time.

Starts a fresh local Ray + Serve (loopback only) with the service's defaults (MLP 784-400-400-10,
ASP, checkpoints in a temporary folder), then runs for ``--duration-s`` seconds:

- ``--streams`` streaming clients, each its own ``stream_id``, sending ``--batch-size`` samples
  per message as fast as the service takes them (the embedded MNIST subset, a fixed pixel
  permutation per stream), with the client's bounded resend buffer;
- ``--predictors`` predicting clients, one sample per Predict, ``--predict-pause-s`` apart;
- optionally ``--kill-every-s``: SIGKILL the learner replica's process that often (fault
  injection; Serve restarts it, it restores its last checkpoint, the clients resend).

It reports, as JSON (stdout and ``--out``): every RPC error by kind (errors a caller saw, and
stream interruptions the client recovered from by reconnecting), the replica's RSS over time
(start, peak, end, and the least-squares slope over the second half), Predict latency p50/p99,
ingest rate, checkpoints, and per stream the samples sent against the samples the service has
applied (trained + held out, from its status): nothing acknowledged may be lost or doubled.

    python -m benchmarks.soak                         # 3 minutes, 3 streams, 2 predictors
    python -m benchmarks.soak --duration-s 120 --kill-every-s 40 --out results/soak_kill.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np


def read_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (MiB per minute) of (seconds, MiB) points."""
    if len(points) < 3:
        return float("nan")
    t, m = np.array(points).T
    return float(np.polyfit(t / 60.0, m, 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--streams", type=int, default=3, help="concurrent streaming clients")
    parser.add_argument("--predictors", type=int, default=2, help="concurrent predicting clients")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per Train message")
    parser.add_argument("--predict-pause-s", type=float, default=0.02, help="pause between one client's Predicts")
    parser.add_argument("--max-unsaved", type=int, default=64, help="each stream client's resend buffer (messages)")
    parser.add_argument("--checkpoint-every-samples", type=int, default=20000)
    parser.add_argument("--kill-every-s", type=float, default=0.0, help="SIGKILL the learner replica this often (0: never)")
    parser.add_argument("--rss-every-s", type=float, default=2.0)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray's CPUs (default: all)")
    parser.add_argument("--out", default="results/soak.json")
    args = parser.parse_args(argv)

    import grpc

    from asp_service.data import load_dataset
    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import free_port, start_service
    from clients import LearnerClient

    data = load_dataset("embedded")
    x_all = data.train_x.numpy().reshape(len(data.train_y), -1)
    y_all = data.train_y.numpy().astype(np.int64)
    probe = data.test_x.numpy()[:64]
    checkpoint_dir = tempfile.mkdtemp(prefix="asp-soak-")
    config = ServiceConfig(device="cpu", checkpoint_dir=checkpoint_dir,
                           checkpoint_every_samples=args.checkpoint_every_samples)
    started_service = time.perf_counter()
    service = start_service(config, grpc_port=free_port(), num_cpus=args.num_cpus)
    stop = threading.Event()
    errors: Counter = Counter()  # every RPC error a caller saw, by "rpc:CODE"
    errors_lock = threading.Lock()
    latencies: list[float] = []
    stream_clients: list[LearnerClient] = []
    sent: dict[str, int] = {}

    def count_error(rpc: str, error: BaseException) -> None:
        code = error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
        with errors_lock:
            errors[f"{rpc}:{code}"] += 1

    def stream_worker(index: int) -> None:
        rng = np.random.default_rng(index)
        permutation = rng.permutation(x_all.shape[1]) if index else np.arange(x_all.shape[1])
        client = LearnerClient(service.target, stream_id=f"soak-{index}", max_unsaved=args.max_unsaved)
        stream_clients.append(client)

        def batches():
            while not stop.is_set():
                order = rng.permutation(len(y_all))
                for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
                    if stop.is_set():
                        return
                    take = order[start:start + args.batch_size]
                    sent[client.stream_id] = sent.get(client.stream_id, 0) + len(take)
                    yield x_all[take][:, permutation].reshape(-1, 28, 28), y_all[take]

        source = batches()
        while not stop.is_set():  # a failed train() is counted, and the stream goes on
            try:
                for _ in client.train(source, retries=60, backoff_s=0.5):
                    pass
            except Exception as error:  # noqa: BLE001 - every error is counted and reported
                count_error("Train", error)
                time.sleep(0.5)

    def predict_worker() -> None:
        with LearnerClient(service.target, timeout_s=30) as client:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    client.predict(probe[np.random.randint(len(probe))][None])
                    latencies.append(time.perf_counter() - t)
                except Exception as error:  # noqa: BLE001
                    count_error("Predict", error)
                    time.sleep(0.2)
                stop.wait(args.predict_pause_s)

    report: dict = {"config": {k: v for k, v in vars(args).items()}, "model": "784-400-400-10 asp",
                    "cpus": os.cpu_count()}
    try:
        with LearnerClient(service.target) as control:
            control.wait_ready(timeout_s=300)
            report["service_start_s"] = round(time.perf_counter() - started_service, 1)
            pid = control.status().pid
            control.predict(probe[:1])  # warm-up
            threads = [threading.Thread(target=stream_worker, args=(i,), daemon=True) for i in range(args.streams)]
            threads += [threading.Thread(target=predict_worker, daemon=True) for _ in range(args.predictors)]
            t0 = time.perf_counter()
            for thread in threads:
                thread.start()
            rss: list[tuple[float, float, int]] = []  # (seconds, MiB, pid)
            kills: list[dict] = []
            next_kill = args.kill_every_s if args.kill_every_s > 0 else float("inf")
            while (now := time.perf_counter() - t0) < args.duration_s:
                value = read_rss_mib(pid)
                if value is None:  # the replica was restarted: follow the new one
                    try:
                        pid = control.status().pid
                    except grpc.RpcError:
                        pass
                else:
                    rss.append((round(now, 1), round(value, 1), pid))
                if now >= next_kill:
                    try:
                        status = control.status()
                    except grpc.RpcError:  # still restarting from the last kill: try again shortly
                        time.sleep(args.rss_every_s)
                        continue
                    os.kill(status.pid, signal.SIGKILL)
                    killed_at = time.perf_counter()
                    print(f"[{now:6.1f} s] SIGKILL learner replica pid {status.pid}", flush=True)
                    restarted = None
                    while restarted is None and time.perf_counter() - killed_at < 300:
                        try:
                            restarted = control.status()
                        except grpc.RpcError:
                            time.sleep(0.2)
                    kills.append({"at_s": round(now, 1), "pid": status.pid,
                                  "samples_not_durable": status.checkpoints.samples_since_checkpoint,
                                  "status_again_after_s": round(time.perf_counter() - killed_at, 1),
                                  "restored_from": restarted.checkpoints.restored_from if restarted else None})
                    if restarted is not None:
                        pid = restarted.pid
                    next_kill += args.kill_every_s
                time.sleep(args.rss_every_s)
            stop.set()
            for thread in threads:
                thread.join(timeout=300)
            elapsed = time.perf_counter() - t0
            status = control.status()

        positions = {p.stream_id: p for p in status.streams}
        streams = []
        for client in stream_clients:
            p = positions.get(client.stream_id)
            applied = (p.samples_trained + p.samples_held_out + p.samples_skipped) if p else 0
            streams.append({"stream_id": client.stream_id, "messages_sent": client.sequence_number,
                            "samples_sent": sent.get(client.stream_id, 0), "samples_applied": applied,
                            "last_sequence_number": p.last_sequence_number if p else 0,
                            "reconnects": client.reconnects, "checkpoint_requests": client.checkpoint_requests,
                            "max_buffered": client.max_buffered, "lost_reported": client.lost})
        last_pid_rss = [(t, m) for t, m, p in rss if p == rss[-1][2]] if rss else []
        half = [(t, m) for t, m in last_pid_rss if t >= last_pid_rss[-1][0] / 2] if last_pid_rss else []
        total_sent = sum(s["samples_sent"] for s in streams)
        report.update({
            "duration_s": round(elapsed, 1),
            "rpc_errors": dict(errors), "rpc_errors_total": sum(errors.values()),
            "stream_reconnects": sum(s["reconnects"] for s in streams),
            "kills": kills,
            "streams": streams,
            "samples_sent": total_sent,
            "samples_applied": sum(s["samples_applied"] for s in streams),
            "exactly_once": all(s["samples_sent"] == s["samples_applied"] and s["lost_reported"] == 0
                                for s in streams),
            "ingest_samples_per_s": round(total_sent / elapsed, 1),
            "predicts": len(latencies),
            "predict_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2) if latencies else None,
            "predict_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2) if latencies else None,
            "predict_max_ms": round(max(latencies) * 1000, 2) if latencies else None,
            "rss_mib": {"start": rss[0][1] if rss else None, "peak": max(m for _, m, _ in rss) if rss else None,
                        "end": rss[-1][1] if rss else None,
                        "slope_last_half_mib_per_min": round(slope_per_min(half), 2),
                        "samples": [[t, m] for t, m, _ in rss]},
            "checkpoints": {"written_by_last_replica": status.checkpoints.written,
                            "last_write_s": round(status.checkpoints.last_write_seconds, 3),
                            "restored_from": status.checkpoints.restored_from,
                            "restore_reason": status.checkpoints.restore_reason,
                            "corrupt_files": status.checkpoints.corrupt_files},
            "samples_seen": status.samples_seen,
        })
    finally:
        stop.set()
        service.stop(checkpoint=False)
    summary = {k: v for k, v in report.items() if k not in ("streams", "config")}
    summary["rss_mib"] = {k: v for k, v in report["rss_mib"].items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if report["rpc_errors_total"] == 0 and report["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
