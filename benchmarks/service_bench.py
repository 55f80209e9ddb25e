"""Service benchmark: the learner over gRPC + Ray Serve against the same learner in process.

Measures, on 5-task Permuted MNIST (``--data-dir`` with MNIST/raw, or the embedded subset):

1. the accuracy matrix R through the service (Train stream, then Predict) and with the same
   ``OnlineLearner`` driven in process on exactly the samples the service trains on (the
   service holds every ``holdout_every``-th sample out for its forgetting probes, splits each
   message into minibatches and re-anchors at each task-hint change: the in-process loop does
   the same), so the two matrices should agree up to floating-point noise;
2. ingest throughput, service vs in process, side by side, and their ratio (same number of
   torch threads in both);
3. Predict latency p50/p99 for one sample, idle and while a stream ingests at full speed;
4. the learner replica's resident memory (RSS) over a long stream: start, peak, end.

    python -m benchmarks.service_bench --data-dir /work/shared/data
    python -m benchmarks.service_bench --dataset embedded --train-per-task 2000   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def inprocess_run(config, scenario, batch_size: int, seed: int = 0) -> tuple[np.ndarray, float, int]:
    """R, seconds and samples for the in-process learner fed like the service feeds its learner."""
    from asp_service.serving.service import build_learner
    from clients.scenario import task_batches

    learner = build_learner(config, config.resolved_device())
    T = len(scenario.tasks)
    R = np.zeros((T, T))
    seconds, samples, position = 0.0, 0, 0
    for i, task in enumerate(scenario.tasks):
        started = time.perf_counter()
        if i > 0:
            learner.reanchor()  # the service re-anchors when the task hint changes
        for x_u8, y_np, _ in task_batches(task, batch_size, seed=seed + i):
            n = len(y_np)
            held = (np.arange(position, position + n) + 1) % config.holdout_every == 0
            position += n
            x = torch.from_numpy(x_u8[~held].astype(np.float32) / np.float32(255.0)).reshape(-1, *config.input_shape)
            y = torch.from_numpy(y_np[~held].astype(np.int64))
            for s in range(0, len(y), config.minibatch):
                learner.observe(x[s:s + config.minibatch], y[s:s + config.minibatch])
            samples += n
        seconds += time.perf_counter() - started
        for j, other in enumerate(scenario.tasks):
            x_test = other.test_x.to(torch.float32).div(255.0).reshape(-1, *config.input_shape)
            predicted = torch.cat([learner.predict(x_test[k:k + 1000]).argmax(1) for k in range(0, len(x_test), 1000)])
            R[i, j] = float((predicted == other.test_y).float().mean())
    return R, seconds, samples


def rpc_latencies(client, x: np.ndarray, count: int, rpc: str = "predict") -> list[float]:
    """Seconds per sequential call: one-sample Predicts, or empty Health RPCs."""
    latencies = []
    for k in range(count):
        started = time.perf_counter()
        if rpc == "health":
            client.health()
        else:
            client.predict(x[k % len(x):k % len(x) + 1])
        latencies.append(time.perf_counter() - started)
    return latencies


def client_process_latencies(target: str, x: np.ndarray, count: int, rpc: str) -> list[float]:
    """:func:`rpc_latencies` from a client process of its own, as a real client would be: this
    process also streams, and holds the in-process run's learner and data, and its threads and
    garbage collector would otherwise be part of the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)
        done = subprocess.run([sys.executable, "-m", "benchmarks.service_bench", "--latency-client", target,
                               str(path), rpc, str(count)], capture_output=True, text=True, check=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _latency_client(target: str, x_path: str, rpc: str, count: str) -> None:
    from clients import LearnerClient

    x = np.load(x_path)
    with LearnerClient(target) as client:
        rpc_latencies(client, x, 20, rpc)  # warm-up
        print(json.dumps(rpc_latencies(client, x, int(count), rpc)))


def endless_batches(scenario, batch_size: int, stop: threading.Event):
    from clients.scenario import scenario_batches

    while not stop.is_set():
        for batch in scenario_batches(scenario, batch_size, task_hints=False):
            if stop.is_set():
                return
            yield batch


def read_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--latency-client":  # the timing client, started by client_process_latencies
        _latency_client(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw; implies --dataset mnist")
    parser.add_argument("--dataset", default=None, help="mnist (default with --data-dir) or embedded")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--train-per-task", type=int, default=None)
    parser.add_argument("--strategy", default="asp")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per gRPC message")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, service replica and in process")
    parser.add_argument("--latency-samples", type=int, default=2000,
                        help="RPCs per latency measurement (p99 of 300 would be the 3rd-worst value)")
    parser.add_argument("--long-stream-s", type=float, default=60.0, help="duration of the RSS stream")
    parser.add_argument("--out", default="results/service_bench.json")
    args = parser.parse_args(argv)
    dataset = args.dataset or ("mnist" if args.data_dir else "embedded")

    from asp_service.evaluation import acc, bwt
    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import free_port, start_service
    from clients import LearnerClient
    from clients.scenario import format_matrix, load_scenario, run_scenario

    scenario = load_scenario("permuted", dataset=dataset, tasks=args.tasks, train_per_task=args.train_per_task,
                             data_dir=args.data_dir)
    names = [t.name for t in scenario.tasks]
    config = ServiceConfig(strategy=args.strategy, device="cpu", num_cpus=args.threads, checkpoint_dir=None)
    torch.set_num_threads(args.threads)
    report: dict = {"scenario": scenario.name, "tasks": args.tasks, "samples_per_task": len(scenario.tasks[0].train_y),
                    "strategy": args.strategy, "message_size": args.batch_size, "minibatch": config.minibatch,
                    "torch_threads": args.threads, "hidden": config.hidden}

    print(f"in process: {scenario.name}, {len(names)} tasks x {report['samples_per_task']} samples", flush=True)
    R_local, local_s, local_n = inprocess_run(config, scenario, args.batch_size)

    service = start_service(config, grpc_port=free_port())
    try:
        from ray import serve

        handle = serve.get_deployment_handle("Learner", app_name=service.app_name)
        stats = handle.process_stats.remote().result()
        pid = stats["pid"]
        with LearnerClient(service.target, stream_id="bench") as client:
            client.wait_ready()
            x_probe = scenario.tasks[0].test_x[:64].numpy()
            idle = client_process_latencies(service.target, x_probe, args.latency_samples, "predict")
            # the floor: an RPC that does no learner work at all (Serve's proxy + one hop to the replica)
            health = client_process_latencies(service.target, x_probe, args.latency_samples, "health")

            print("service: streaming the scenario over gRPC", flush=True)
            result = run_scenario(client, scenario, batch_size=args.batch_size)

            print("service: predict latency under full ingest, and RSS over a long stream", flush=True)
            stop = threading.Event()
            acks: list = []
            rss = [read_rss(pid)]
            streamer = threading.Thread(
                target=lambda: acks.extend(client.train(endless_batches(scenario, args.batch_size, stop))), daemon=True)
            started = time.perf_counter()
            streamer.start()
            time.sleep(2)
            busy = client_process_latencies(service.target, x_probe, args.latency_samples, "predict")
            while time.perf_counter() - started < args.long_stream_s:
                rss.append(read_rss(pid))
                time.sleep(1)
            stop.set()
            streamer.join(timeout=120)
            long_s = time.perf_counter() - started
            rss.append(read_rss(pid))
            long_samples = sum(a.samples_applied + a.held_out for a in acks)
    finally:
        service.stop(checkpoint=False)

    R_service = result.R
    service_rate, local_rate = result.throughput, local_n / local_s
    report.update({
        "R_service": result.R.tolist(),
        "R_inprocess": R_local.tolist(),
        "ACC_service": acc(R_service), "BWT_service": bwt(R_service),
        "ACC_inprocess": acc(R_local), "BWT_inprocess": bwt(R_local),
        "max_abs_R_difference": float(np.abs(R_service - R_local).max()),
        "ingest_samples_per_s_service": service_rate, "ingest_samples_per_s_inprocess": local_rate,
        "ingest_ratio_service_over_inprocess": service_rate / local_rate,
        "predict_ms_idle": {"p50": percentile_ms(idle, 50), "p99": percentile_ms(idle, 99), "n": len(idle)},
        "health_ms_idle": {"p50": percentile_ms(health, 50), "p99": percentile_ms(health, 99), "n": len(health)},
        "predict_ms_under_ingest": {"p50": percentile_ms(busy, 50), "p99": percentile_ms(busy, 99), "n": len(busy)},
        "long_stream": {"seconds": long_s, "samples": long_samples, "samples_per_s": long_samples / long_s,
                        "rss_mib_start": rss[0] / 2**20, "rss_mib_peak": max(rss) / 2**20,
                        "rss_mib_end": rss[-1] / 2**20},
    })
    print()
    print("R through the service (%):")
    print(format_matrix(R_service, names))
    print("R in process (%):")
    print(format_matrix(R_local, names))
    print(f"""
| measure | service (gRPC + Serve) | in process |
|---|---|---|
| ACC / BWT (%) | {100 * report['ACC_service']:.1f} / {100 * report['BWT_service']:+.1f} | {100 * report['ACC_inprocess']:.1f} / {100 * report['BWT_inprocess']:+.1f} |
| ingest (samples/s) | {service_rate:.0f} | {local_rate:.0f} |
| ratio service / in process | {report['ingest_ratio_service_over_inprocess']:.2f} | |
| predict p50 / p99, idle (ms) | {report['predict_ms_idle']['p50']:.1f} / {report['predict_ms_idle']['p99']:.1f} | |
| Health p50 / p99, idle (ms): the proxy's floor | {report['health_ms_idle']['p50']:.1f} / {report['health_ms_idle']['p99']:.1f} | |
| predict p50 / p99, under full ingest (ms) | {report['predict_ms_under_ingest']['p50']:.1f} / {report['predict_ms_under_ingest']['p99']:.1f} | |
| replica RSS start / peak / end (MiB), {long_s:.0f}s stream of {long_samples} samples | {report['long_stream']['rss_mib_start']:.0f} / {report['long_stream']['rss_mib_peak']:.0f} / {report['long_stream']['rss_mib_end']:.0f} | |

max |R_service - R_in_process| = {100 * report['max_abs_R_difference']:.2f} points""")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
