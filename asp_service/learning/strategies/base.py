"""The plug-in contract between the online learner and an importance estimator.

The learner owns the training loop and one :class:`~asp_service.learning.penalty.Consolidation`;
a strategy only estimates importance. It sees each step through a typed :class:`StepContext`
and, when the anchoring policy fires, hands over the importance of the segment that just ended
(``consolidate``), then starts a new segment. Hyperparameters are public attributes under their
constructor names; learned state is rebuilt in ``_reset`` and travels in ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class StepContext:
    """What a strategy may read during one training step."""

    model: nn.Module
    params: Mapping[str, nn.Parameter]
    x: Tensor
    y: Tensor
    logits: Tensor
    classes: Sequence[int] | None = None
    layers: Sequence[nn.Module] | None = None
    inputs: Sequence[Tensor] | None = None  # input of each layer, recorded by the forward pass


class Strategy:
    """Base class: no importance at all (plain fine-tuning)."""

    name = "vanilla"
    #: penalty form (see Consolidation): "weighted" (EWC) or "latest" (online EWC, SI)
    form = "weighted"
    #: whether the learner must record every layer's input during the forward pass
    needs_layer_inputs = False
    #: samples the learner must keep for estimating importance at an anchor (0: none)
    buffer_size = 0

    def __init__(self, params: Mapping[str, nn.Parameter], model: nn.Module):
        self._params = dict(params)
        self._model = model
        self._reset()

    def _reset(self) -> None:
        """(Re)build the learned state."""

    @property
    def hyperparameters(self) -> dict:
        return {}

    def after_backward(self, ctx: StepContext) -> None:
        """Called with ``.grad`` holding the total gradient (task loss + penalty), before the step."""

    def after_step(self, ctx: StepContext) -> None:
        """Called after the optimizer step."""

    def consolidate(self, data: tuple[Tensor, Tensor, Sequence[int] | None] | None) -> dict[str, Tensor] | None:
        """Importance of the segment that ends now (name -> tensor), then start a new segment.

        ``data`` is ``(x, y, classes)`` of the most recent samples when ``buffer_size`` > 0.
        """
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        self._reset()


def check_positive(name: str, value: float, *, allow_zero: bool = True) -> float:
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def clone_tensors(d: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in d.items()}


def load_tensors(target: dict[str, Tensor], source: Mapping[str, Tensor]) -> None:
    for k, v in source.items():
        target[k].copy_(v)


def zeros_like_params(params: Mapping[str, Tensor], names=None) -> dict[str, Tensor]:
    names = params.keys() if names is None else names
    return {n: torch.zeros_like(params[n], memory_format=torch.contiguous_format).detach() for n in names}
