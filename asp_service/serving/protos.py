"""Python stubs for ``proto/asp/v1/learner.proto``, generated on first import.

The stubs are build output, never committed: :func:`~asp_service.serving.stubgen.ensure_generated`
writes them into ``asp_service/serving/_generated/`` in a checkout (when missing or stale), and a
built wheel carries them (``setup.py``), so an installed package needs no ``proto/`` tree.

Importing this module gives ``learner_pb2`` and ``learner_pb2_grpc``::

    from asp_service.serving.protos import learner_pb2, learner_pb2_grpc
"""

from __future__ import annotations

from asp_service.serving.stubgen import PROTO_FILE, ensure_generated

ensure_generated()

from asp_service.serving._generated.asp.v1 import learner_pb2, learner_pb2_grpc  # noqa: E402

__all__ = ["learner_pb2", "learner_pb2_grpc", "ensure_generated", "PROTO_FILE"]
