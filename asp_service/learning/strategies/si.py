r"""Synaptic intelligence (Zenke, Poole and Ganguli 2017).

During a segment each parameter accumulates its contribution to the drop in loss along the
optimisation path, :math:`\omega_k \mathrel{+}= -g_k \, \Delta\theta_k` (``g`` the gradient used
by the step, penalty included, as in van de Ven's reference code). At the anchor

.. math::

    \Omega_k = \frac{\omega_k}{(\theta_k - \theta_k^{start})^2 + \xi}

and a new segment starts (the rare negative values are clipped to 0 so the penalty stays a bowl).
Importances add up and pull towards the latest anchor (the
``"latest"`` penalty form), as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import StepContext, Strategy, check_positive, clone_tensors, load_tensors, zeros_like_params


class SI(Strategy):
    name = "si"
    form = "latest"

    def __init__(self, params: Mapping[str, nn.Parameter], model: nn.Module, *, xi: float = 0.1):
        self.xi = check_positive("xi", xi, allow_zero=False)
        super().__init__(params, model)

    @property
    def hyperparameters(self) -> dict:
        return {"xi": self.xi}

    def _reset(self) -> None:
        self.omega = zeros_like_params(self._params)
        self.start = clone_tensors(self._params)
        self._grad = zeros_like_params(self._params)
        self._before = zeros_like_params(self._params)

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        for n, p in self._params.items():
            if p.grad is None:
                self._grad[n].zero_()
            else:
                self._grad[n].copy_(p.grad)
            self._before[n].copy_(p)

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        for n, p in self._params.items():
            # omega -= g * (theta_new - theta_old)
            self.omega[n].addcmul_(self._grad[n], p - self._before[n], value=-1.0)

    @torch.no_grad()
    def consolidate(self, data=None):
        out = {}
        for n, p in self._params.items():
            out[n] = (self.omega[n] / ((p - self.start[n]).pow(2) + self.xi)).clamp_(min=0)
            self.omega[n].zero_()
            self.start[n].copy_(p)
        return out

    def state_dict(self) -> dict:
        return {"omega": clone_tensors(self.omega), "start": clone_tensors(self.start)}

    def load_state_dict(self, state: Mapping) -> None:
        self._reset()
        load_tensors(self.omega, state["omega"])
        load_tensors(self.start, state["start"])
