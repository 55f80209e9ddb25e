"""Importance estimators that plug into the one consolidation penalty."""

from .asp import ASP
from .base import StepContext, Strategy
from .ewc import EWC, OnlineEWC
from .mas import MAS
from .si import SI

#: name -> strategy class
REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in (Strategy, ASP, EWC, OnlineEWC, SI, MAS)}

__all__ = ["ASP", "EWC", "MAS", "REGISTRY", "SI", "OnlineEWC", "StepContext", "Strategy"]
