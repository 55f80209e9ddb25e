"""The gRPC service: a Ray Serve learner deployment behind Serve's gRPC proxy.

Modules: ``protos`` (stubs generated from ``proto/asp/v1/learner.proto`` on first import),
``validation``, ``service`` (the Ray-free learner state and RPC logic), ``predictor``
(snapshots, predictions and attention maps), ``regimes`` (live forgetting probes),
``checkpoint``, ``metrics``, ``deployment`` (Serve deployments and the app builder
``build_app``), ``grpc_servicer`` (the proxy's servicer function) and ``server`` (start and
stop a local Ray + Serve). See ``docs/SERVICE.md``. Importing this package imports nothing
heavy: clients use ``protos`` and ``validation`` without Ray or torch.
"""
