"""Clients for the asp-service gRPC API: :class:`LearnerClient` and the ``asp-client`` CLI."""

from clients.learner_client import LearnerClient

__all__ = ["LearnerClient"]
