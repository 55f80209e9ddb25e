"""Start and stop a local Ray + Serve running the learner app behind Serve's gRPC proxy.

Used by ``asp-service serve``, ``asp-demo``, the benchmarks and the test fixtures, so that all
of them run exactly the app that ``serve run deploy/serve_config.yaml`` runs.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from asp_service.serving.config import ServiceConfig
from asp_service.serving.grpc_servicer import SERVICER_FUNCTION

logger = logging.getLogger(__name__)

#: The proxy refuses messages over this size with RESOURCE_EXHAUSTED before they reach a replica.
PROXY_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Ray Serve settings that shorten every RPC's path (proxy -> replica); measured in
#: docs/SERVICE.md, "Latency settings". They go into the Serve controller's runtime_env, which the
#: proxy and the replicas inherit, and not into this process: a driver with
#: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 cannot use a deployment handle outside an event loop.
#: A variable already set in the environment wins. deploy/serve_config.yaml and the KubeRay
#: manifest carry the same values.
SERVE_ENV_VARS = {
    "RAY_SERVE_PROXY_USE_GRPC": "1",  # proxy -> replica over gRPC, not a Ray actor call
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(PROXY_MAX_MESSAGE_BYTES),  # default 4 MiB
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",  # replica: user code on its main event loop
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",  # proxy: router on its main event loop
    "RAY_SERVE_LOG_TO_STDERR": "0",  # Serve logs go to their files only
}
#: No access-log line per request (proxy and replica); other logs as before.
SERVE_LOGGING = {"enable_access_log": False}


def serve_env_vars() -> dict[str, str]:
    return {name: os.environ.get(name, value) for name, value in SERVE_ENV_VARS.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    grpc_port: int
    metrics_port: int
    app_name: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def final_checkpoint(self) -> str:
        """Ask the learner for a checkpoint; '' when checkpoints are off."""
        from ray import serve

        handle = serve.get_deployment_handle("Learner", app_name=self.app_name)
        return handle.checkpoint_now.remote().result(timeout_s=120)

    def stop(self, *, checkpoint: bool = True) -> None:
        import ray
        from ray import serve

        if checkpoint:
            try:
                path = self.final_checkpoint()
                if path:
                    logger.info("final checkpoint: %s", path)
            except Exception:
                logger.exception("final checkpoint failed")
        serve.shutdown()
        ray.shutdown()


def start_ray(*, metrics_port: int | None = None, num_cpus: int | None = None) -> int:
    """Start a new local Ray (never joins a running cluster; no dashboard) exporting metrics on
    ``metrics_port``; returns that port."""
    import ray

    os.environ.setdefault("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE", str(PROXY_MAX_MESSAGE_BYTES))
    metrics_port = metrics_port or free_port()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port,
                 logging_level=logging.WARNING, log_to_driver=False)
    return metrics_port


def start_serve(*, grpc_port: int = 9000, http_port: int | None = None) -> None:
    from ray import serve
    from ray.serve.config import gRPCOptions, HTTPOptions

    serve.start(
        http_options=HTTPOptions(host="127.0.0.1", port=http_port or free_port()),
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION]),
        controller_options={"runtime_env": {"env_vars": serve_env_vars()}},
        logging_config=SERVE_LOGGING,
    )


def deploy(config: ServiceConfig, *, app_name: str = "asp") -> None:
    """Deploy (or redeploy) the learner app; blocks until it is running."""
    from ray import serve

    from asp_service.serving.deployment import build_app

    serve.run(build_app(config.model_dump()), name=app_name, route_prefix=f"/{app_name}", logging_config=SERVE_LOGGING)


def start_service(config: ServiceConfig, *, grpc_port: int = 9000, metrics_port: int | None = None,
                  num_cpus: int | None = None, app_name: str = "asp") -> RunningService:
    metrics_port = start_ray(metrics_port=metrics_port, num_cpus=num_cpus)
    start_serve(grpc_port=grpc_port)
    deploy(config, app_name=app_name)
    return RunningService(grpc_port, metrics_port, app_name)
