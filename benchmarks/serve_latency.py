"""A/B of Ray Serve settings on the latency of one RPC through Serve's gRPC proxy.

Each configuration (environment variables set before ``ray.init``, so that the controller,
the proxy and the replica inherit them, plus optional Serve logging settings) runs in its own
subprocess with a fresh local Ray + Serve started by ``asp_service.serving.server``. Per run:
warm-up, then ``--n`` sequential Health and one-sample Predict RPCs while idle, then the same
while a Train stream (500 samples per message, embedded MNIST, endless) ingests at full speed.
Configurations alternate round by round (A B C A B C ...), because the machine is shared; the
table gives the median over rounds of each run's p50 and p99.

    python -m benchmarks.serve_latency --rounds 3 --config base= \\
        --config 'sep0=RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0'
    # a config is NAME=VAR=VALUE,VAR=VALUE,...; the pseudo-variables LOG_LEVEL and ACCESS_LOG
    # set Serve's logging_config (serve.start and the app) instead of the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

LOGGING_KEYS = {"LOG_LEVEL": "log_level", "ACCESS_LOG": "enable_access_log"}


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition("=")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        settings[key] = value
    return name, settings


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "n": len(values)}


def timed(call, count: int) -> list[float]:
    out = []
    for k in range(count):
        started = time.perf_counter()
        call(k)
        out.append(time.perf_counter() - started)
    return out


def replica_pid() -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::ServeReplica:asp:Learner"):
                        return int(entry)
            except OSError:
                pass
    raise RuntimeError("no learner replica process")


def child(settings: dict[str, str], n: int, busy_n: int) -> dict:
    logging_config = {}
    for key, value in settings.items():
        if key == "SRC":
            continue
        if key in LOGGING_KEYS:
            logging_config[LOGGING_KEYS[key]] = value if key == "LOG_LEVEL" else value == "1"
        else:
            os.environ[key] = value

    from asp_service.serving import server
    from asp_service.serving.config import ServiceConfig
    from clients import LearnerClient
    from clients.scenario import load_scenario, scenario_batches

    config = ServiceConfig(strategy="asp", device="cpu", num_cpus=1, checkpoint_dir=None)
    if logging_config:
        from ray import serve
        from ray.serve.config import gRPCOptions, HTTPOptions

        from asp_service.serving.deployment import build_app
        from asp_service.serving.grpc_servicer import SERVICER_FUNCTION

        server.start_ray()
        port = server.free_port()
        serve.start(http_options=HTTPOptions(host="127.0.0.1", port=server.free_port()),
                    grpc_options=gRPCOptions(port=port, grpc_servicer_functions=[SERVICER_FUNCTION]),
                    logging_config=logging_config)
        serve.run(build_app(config.model_dump()), name="asp", route_prefix="/asp", logging_config=logging_config)
        service = server.RunningService(port, 0, "asp")
    else:
        service = server.start_service(config, grpc_port=server.free_port())
    scenario = load_scenario("permuted", dataset="embedded", tasks=5)
    x = scenario.tasks[0].test_x[:64].numpy()
    result: dict = {"settings": settings}
    try:
        pid = replica_pid()  # not through a handle: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 forbids sync handles
        with open(f"/proc/{pid}/environ", "rb") as f:  # the replica really got the variables
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        result["replica_env"] = {k: env.get(k.encode(), b"<unset>").decode()
                                 for k in {*settings, "RAY_SERVE_PROXY_USE_GRPC"} - {*LOGGING_KEYS, "SRC"}}
        import asp_service

        result["src"] = os.path.dirname(os.path.dirname(asp_service.__file__))
        with LearnerClient(service.target, stream_id="ab") as client, LearnerClient(service.target) as reader:
            client.wait_ready()
            timed(lambda k: reader.health(), 200)
            timed(lambda k: reader.predict(x[k % 64:k % 64 + 1]), 200)
            result["health_idle"] = percentiles(timed(lambda k: reader.health(), n))
            result["predict_idle"] = percentiles(timed(lambda k: reader.predict(x[k % 64:k % 64 + 1]), n))

            stop = threading.Event()
            acks: list = []

            def batches():
                while not stop.is_set():
                    for batch in scenario_batches(scenario, 500, task_hints=False):
                        if stop.is_set():
                            return
                        yield batch

            streamer = threading.Thread(target=lambda: acks.extend(client.train(batches())), daemon=True)
            streamer.start()
            time.sleep(3)
            started = time.perf_counter()
            samples_before = sum(a.samples_applied + a.held_out for a in acks)
            result["predict_busy"] = percentiles(timed(lambda k: reader.predict(x[k % 64:k % 64 + 1]), busy_n))
            result["health_busy"] = percentiles(timed(lambda k: reader.health(), busy_n))
            elapsed = time.perf_counter() - started
            result["ingest_samples_per_s"] = (sum(a.samples_applied + a.held_out for a in acks) - samples_before) / elapsed
            stop.set()
            streamer.join(timeout=60)
    finally:
        service.stop(checkpoint=False)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="NAME=VAR=VALUE,VAR=VALUE (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=1500, help="idle RPCs of each kind per run")
    parser.add_argument("--busy-n", type=int, default=1000, help="RPCs of each kind per run under ingest")
    parser.add_argument("--out", default="results/serve_latency.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print("RESULT " + json.dumps(child(json.loads(args.child), args.n, args.busy_n)), flush=True)
        return 0

    configs = [parse_config(c) for c in args.config]
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        for name, settings in configs:
            env = dict(os.environ)
            env.update({k: v for k, v in settings.items() if k not in LOGGING_KEYS and k != "SRC"})
            cwd = None
            if "SRC" in settings:  # another checkout of the project, e.g. a git worktree of an older commit
                cwd = env["PYTHONPATH"] = settings["SRC"]
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--config", "x=",
                                   "--n", str(args.n), "--busy-n", str(args.busy_n), "--child", json.dumps(settings)],
                                  capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if not lines:
                print(f"round {r} {name}: FAILED rc={proc.returncode}\n{proc.stderr[-3000:]}", flush=True)
                continue
            res = json.loads(lines[-1][7:])
            runs[name].append(res)
            print(f"round {r} {name:>12}: " + "  ".join(
                f"{k} {res[k]['p50']:.2f}/{res[k]['p99']:.2f}" for k in ("health_idle", "predict_idle", "predict_busy", "health_busy"))
                + f"  ingest {res['ingest_samples_per_s']:.0f}/s  src {res['src']}  env {res['replica_env']}", flush=True)

    print("\nmedian over rounds of p50 / p99 (ms)")
    print("| config | Health idle | Predict idle | Predict under ingest | Health under ingest | ingest/s | runs |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in configs:
        rs = runs[name]
        if not rs:
            continue
        cells = []
        for k in ("health_idle", "predict_idle", "predict_busy", "health_busy"):
            cells.append(f"{np.median([x[k]['p50'] for x in rs]):.2f} / {np.median([x[k]['p99'] for x in rs]):.2f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {np.median([x['ingest_samples_per_s'] for x in rs]):.0f} | {len(rs)} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"configs": dict(configs), "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
