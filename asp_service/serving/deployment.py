"""Ray Serve deployments: the stateful learner (the gRPC ingress) and optional predictor replicas.

gRPC method = Python method (``/asp.v1.Learner/Predict`` calls ``LearnerDeployment.Predict``).
Each method runs the blocking work in a worker thread (``asyncio.to_thread``) so that the
replica's event loop keeps answering predictions while a training step runs (a small Predict
without attention runs on the loop: it costs less than the hand-off); the one-writer
rule and consistent reads are :class:`~asp_service.serving.service.LearnerService`'s job.

With ``predictors: N`` the learner forwards each Predict to N :class:`PredictorDeployment`
replicas through a deployment handle. A predictor pulls the published weights from the learner
whenever the learner's version is newer than its own, so predictions scale out while the one
learner keeps all the state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import torch
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle

from asp_service.learning import mlp
from asp_service.serving.auth import TokenAuth
from asp_service.serving.config import ServiceConfig
from asp_service.serving.metrics import RayServeMetrics
from asp_service.serving.predictor import Snapshot, predict
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.service import LearnerService
from asp_service.serving.validation import InvalidRequest, Limits, check_train_request

logger = logging.getLogger("ray.serve")

TICK_S = 1.0
PREFETCH = 4  # Train messages read ahead of the one being applied
# A Predict this small, without attention, on the CPU (0.2 ms) runs on the replica's event loop:
# two thread hand-offs cost more than the work, most of all while a training step holds the GIL.
INLINE_PREDICT_MAX_BYTES = 64 * 1024


def _refuse(error: InvalidRequest, context: RayServegRPCContext) -> None:
    context.set_code(error.code)
    context.set_details(error.message)


@serve.deployment(name="Learner")
class LearnerDeployment:
    """The one stateful learner replica; it is the application's gRPC ingress."""

    def __init__(self, config: dict[str, Any], predictors: DeploymentHandle | None = None):
        self.config = ServiceConfig(**config)
        if self.config.num_cpus >= 1:
            torch.set_num_threads(max(1, int(self.config.num_cpus)))
        self.auth = TokenAuth.from_sources(writer_token_file=self.config.writer_token_file,
                                           reader_token_file=self.config.reader_token_file)
        logger.info("authentication: %r", self.auth)  # counts only, never the tokens
        self.metrics = RayServeMetrics()
        self.service = LearnerService(self.config, metrics=self.metrics)
        self._predictors = predictors
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="asp-tick", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.service.tick()
            except Exception:  # keep ticking: one failed checkpoint must not stop the probes
                logger.exception("periodic work failed")

    def _refused(self, rpc: str, error: InvalidRequest, context: RayServegRPCContext) -> None:
        self.metrics.on_invalid(rpc, error.code.name)
        _refuse(error, context)

    def _authorize(self, rpc: str, context: RayServegRPCContext) -> None:
        """Raise InvalidRequest (UNAUTHENTICATED, already set on the context) unless the token allows ``rpc``."""
        try:
            self.auth.check(rpc, context.invocation_metadata())
        except InvalidRequest as error:
            self._refused(rpc, error, context)
            raise

    def _train(self, request: pb.TrainRequest) -> pb.TrainAck:
        check_train_request(request, self.service.limits)
        return self.service.train(request)

    async def Train(self, request_stream: AsyncIterator[pb.TrainRequest],
                    grpc_context: RayServegRPCContext) -> AsyncIterator[pb.TrainAck]:
        self._authorize("Train", grpc_context)  # before any message is read
        # Each message reaches the replica through one Ray call to the proxy: fetch the next
        # messages while the current one trains, so that the learner never waits on the network.
        queue: asyncio.Queue = asyncio.Queue(maxsize=PREFETCH)

        async def pump() -> None:
            try:
                async for request in request_stream:
                    await queue.put(request)
            finally:
                await queue.put(None)

        # Acks go out through their own queue, so that the next message starts training while
        # Serve is still sending the previous ack back through the proxy.
        acks: asyncio.Queue = asyncio.Queue()

        async def trainer() -> None:
            try:
                while (request := await queue.get()) is not None:
                    await acks.put(await asyncio.to_thread(self._train, request))
            except Exception as error:  # handed to the response stream, which raises it there
                await acks.put(error)
            finally:
                await acks.put(None)

        fetcher = asyncio.create_task(pump())
        training = asyncio.create_task(trainer())
        try:
            while (ack := await acks.get()) is not None:
                if isinstance(ack, InvalidRequest):
                    # Ending a response stream drops the code set on the context; raising after
                    # setting it makes Serve answer with that code and these details.
                    self._refused("Train", ack, grpc_context)
                    raise ack
                if isinstance(ack, Exception):
                    raise ack
                yield ack
        finally:
            fetcher.cancel()
            training.cancel()
            await asyncio.to_thread(self.service.flush, True)

    async def _answer(self, rpc: str, context: RayServegRPCContext, empty, work: Callable[[], Awaitable]):
        """A unary RPC: authorize, await ``work()``, and answer a refusal with its code and ``empty``."""
        try:
            self._authorize(rpc, context)  # sets UNAUTHENTICATED and counts the refusal itself
        except InvalidRequest:
            return empty
        try:
            return await work()
        except InvalidRequest as error:
            self._refused(rpc, error, context)
            return empty

    async def TrainBatch(self, request: pb.TrainRequest, grpc_context: RayServegRPCContext) -> pb.TrainAck:
        async def work() -> pb.TrainAck:
            ack = await asyncio.to_thread(self._train, request)
            await asyncio.to_thread(self.service.flush)
            return ack

        return await self._answer("TrainBatch", grpc_context, pb.TrainAck(), work)

    async def Predict(self, request: pb.PredictRequest, grpc_context: RayServegRPCContext) -> pb.PredictReply:
        async def work() -> pb.PredictReply:
            if self._predictors is None:
                if (request.attention.target == pb.AttentionRequest.TARGET_NONE
                        and len(request.inputs.data) <= INLINE_PREDICT_MAX_BYTES
                        and self.service.snapshot.device.type == "cpu"):
                    return self.service.predict(request)
                return await asyncio.to_thread(self.service.predict, request)
            outcome = await self._predictors.predict.remote(request, self.service.snapshot.version)
            if isinstance(outcome, InvalidRequest):
                raise outcome
            return outcome

        return await self._answer("Predict", grpc_context, pb.PredictReply(), work)

    async def GetStatus(self, request: pb.StatusRequest, grpc_context: RayServegRPCContext) -> pb.StatusReply:
        return await self._answer("GetStatus", grpc_context, pb.StatusReply(),
                                  lambda: asyncio.to_thread(self.service.status))

    async def Checkpoint(self, request: pb.CheckpointRequest, grpc_context: RayServegRPCContext) -> pb.CheckpointReply:
        return await self._answer("Checkpoint", grpc_context, pb.CheckpointReply(),
                                  lambda: asyncio.to_thread(self.service.checkpoint))

    async def Reanchor(self, request: pb.ReanchorRequest, grpc_context: RayServegRPCContext) -> pb.ReanchorReply:
        return await self._answer("Reanchor", grpc_context, pb.ReanchorReply(),
                                  lambda: asyncio.to_thread(self.service.reanchor))

    async def Health(self, request: pb.HealthRequest) -> pb.HealthReply:
        status = pb.HealthReply.STATUS_SERVING if self._ticker.is_alive() else pb.HealthReply.STATUS_NOT_SERVING
        return pb.HealthReply(status=status, model_version=self.service.snapshot.version)

    # Called by predictor replicas through a deployment handle, not over gRPC.
    async def weights(self, have_version: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        return self.service.weights(have_version)

    def process_stats(self) -> dict[str, int]:
        """The replica's pid and resident memory (for benchmarks)."""
        import os

        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return {"pid": os.getpid(), "rss_bytes": rss, "torch_threads": torch.get_num_threads()}

    async def checkpoint_now(self) -> str:
        """For the CLI's graceful stop: a final checkpoint while the replica is still up."""
        if self.service.config.checkpoint_dir is None:
            return ""
        return (await asyncio.to_thread(self.service.checkpoint)).path

    def __del__(self) -> None:
        if not hasattr(self, "service"):  # the constructor failed: nothing to save
            return
        self._stop.set()
        try:
            self.service.shutdown()
        except Exception:
            logger.exception("final checkpoint failed")


@serve.deployment(name="Predictor")
class PredictorDeployment:
    """A stateless reader: answers Predict from weights pulled from the learner on version change."""

    def __init__(self, config: dict[str, Any]):
        self.config = ServiceConfig(**config)
        self.limits = Limits(tuple(self.config.input_shape), self.config.num_classes,
                             self.config.max_samples_per_message, self.config.max_message_bytes)
        self._snapshot: Snapshot | None = None
        self._pull = asyncio.Lock()
        self._learner: DeploymentHandle | None = None

    async def _refresh(self, version: int) -> Snapshot:
        async with self._pull:
            if self._snapshot is None or self._snapshot.version < version:
                if self._learner is None:
                    app = serve.get_replica_context().app_name
                    self._learner = serve.get_deployment_handle("Learner", app_name=app)
                have = -1 if self._snapshot is None else self._snapshot.version
                pulled = await self._learner.weights.remote(have)
                if pulled is not None:
                    new_version, state = pulled
                    model = mlp(math.prod(self.config.input_shape), list(self.config.hidden), self.config.num_classes)
                    model.load_state_dict(state)
                    self._snapshot = Snapshot.of(model, new_version)
            return self._snapshot

    async def predict(self, request: pb.PredictRequest, learner_version: int) -> pb.PredictReply | InvalidRequest:
        snapshot = self._snapshot
        if snapshot is None or snapshot.version < learner_version:
            snapshot = await self._refresh(learner_version)
        try:
            return await asyncio.to_thread(predict, snapshot, request, self.limits)
        except InvalidRequest as error:
            return error


def _gpus_for(config: ServiceConfig) -> float:
    if config.device == "cuda":
        return 1.0
    if config.device == "auto":
        import ray

        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1:
            return 1.0
    return 0.0


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder (``serve run deploy/serve_config.yaml`` and ``asp-service serve``)."""
    config = ServiceConfig(**args)
    if config.checkpoint_dir:  # relative to where the app is built, not to the replica's working dir
        config.checkpoint_dir = os.path.abspath(os.path.expanduser(config.checkpoint_dir))
    for field in ("writer_token_file", "reader_token_file"):
        if getattr(config, field):
            setattr(config, field, os.path.abspath(os.path.expanduser(getattr(config, field))))
    predictors = None
    if config.predictors:
        predictors = PredictorDeployment.options(
            num_replicas=config.predictors, max_ongoing_requests=config.max_ongoing_requests,
            ray_actor_options={"num_cpus": config.predictor_num_cpus},
        ).bind(config.model_dump())
    learner = LearnerDeployment.options(
        num_replicas=1,  # one writer: the learner is stateful and never scales out
        # An open Train stream holds one slot for its whole life: leave plenty for predictions.
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": _gpus_for(config)},
        graceful_shutdown_timeout_s=60,
    )
    return learner.bind(config.model_dump(), predictors)
