"""The function Serve's gRPC proxy calls to register the Learner service.

Stubs from grpcio-tools >= 1.64 register each service twice: through
``add_generic_rpc_handlers`` and through ``add_registered_method_handlers``. Serve rewrites
the generic handlers so that calls are routed to replicas; Ray versions before the proxy also
rewrote the registered ones answered every RPC from the registered path with
``UNKNOWN ... 'Mock'``. Registering through :class:`_GenericOnly` turns the second call into a
no-op, so every call takes the routed path whichever Ray version runs the proxy
(``tests/test_service.py`` checks that real RPCs succeed). This module stays light: the proxy
imports it, and it must not pull in torch or the learner.
"""

from __future__ import annotations

from typing import Any

from asp_service.serving.protos import learner_pb2_grpc

#: Import path for ``grpc_servicer_functions`` (CLI, tests and deploy/serve_config.yaml).
SERVICER_FUNCTION = "asp_service.serving.grpc_servicer.add_learner_servicer"


class _GenericOnly:
    """Forwards generic handler registration to the real server; drops registered-method handlers."""

    def __init__(self, server: Any):
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        return None


def add_learner_servicer(servicer: Any, server: Any) -> None:
    learner_pb2_grpc.add_LearnerServicer_to_server(servicer, _GenericOnly(server))
