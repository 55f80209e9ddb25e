r"""Attention-Based Selective Plasticity (Kolouri et al. 2019): importance from c-EB by Oja's rule.

At every step the true label's c-EB maps :math:`Pc^0 .. Pc^L` are computed from the activations
the training forward pass already recorded (no second forward), and every synaptic layer's
importance moves by the batched Oja rule (Eq. 4, :func:`~asp_service.learning.importance.oja_update`):

.. math::

    \gamma \leftarrow \gamma + \epsilon \left( \tfrac{1}{B} Pc_{post}^\top Pc_{pre} - \overline{(Pc_{post})^2} \odot \gamma \right)

At an anchor the segment's :math:`\gamma` is handed to the penalty (EWC's form, one quadratic per
anchor, which the consolidation machine folds into one) and, with ``reset_on_anchor`` (default),
starts again from 0, so each anchor carries the importance of its own segment. The prototype
recorded in ALGORITHM.md found this form essential; ``reset_on_anchor=False`` keeps one running
:math:`\gamma` instead (each anchor then re-adds everything learned so far).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..attention import SYNAPTIC, attention_from_inputs, sequential_layers
from ..importance import oja_update, oja_update_conv
from .base import StepContext, Strategy, check_positive, clone_tensors, load_tensors, zeros_like_params


class ASP(Strategy):
    name = "asp"
    needs_layer_inputs = True

    def __init__(
        self,
        params: Mapping[str, nn.Parameter],
        model: nn.Module,
        *,
        eps: float = 1.0,
        normalize: str = "sum",
        reset_on_anchor: bool = True,
    ):
        self.eps = check_positive("eps", eps, allow_zero=False)
        if normalize not in ("sum", "max"):
            raise ValueError("normalize must be 'sum' or 'max'")
        self.normalize = normalize
        self.reset_on_anchor = bool(reset_on_anchor)
        layers = sequential_layers(model)
        ids = {id(p): n for n, p in params.items()}
        self._synaptic = [m for m in layers if isinstance(m, SYNAPTIC)]
        self._names = [ids[id(m.weight)] for m in self._synaptic]
        super().__init__(params, model)

    @property
    def hyperparameters(self) -> dict:
        return {"eps": self.eps, "normalize": self.normalize, "reset_on_anchor": self.reset_on_anchor}

    def _reset(self) -> None:
        self.gamma = zeros_like_params(self._params, self._names)
        self._workspace: dict = {}

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        maps, pre_maps = attention_from_inputs(
            ctx.layers, ctx.inputs, ctx.y, normalize=self.normalize, with_layer_inputs=True,
            workspace=self._workspace,
        )
        for layer, name, pre, post in zip(self._synaptic, self._names, pre_maps, maps[1:]):
            if isinstance(layer, nn.Conv2d):
                oja_update_conv(self.gamma[name], pre, post, self.eps, layer)
            else:
                oja_update(self.gamma[name], pre.flatten(1), post.flatten(1), self.eps)

    def consolidate(self, data=None):
        out = clone_tensors(self.gamma)
        if self.reset_on_anchor:
            for g in self.gamma.values():
                g.zero_()
        return out

    def state_dict(self) -> dict:
        return {"gamma": clone_tensors(self.gamma)}

    def load_state_dict(self, state: Mapping) -> None:
        self._reset()
        load_tensors(self.gamma, state["gamma"])
