r"""Memory aware synapses (Aljundi et al. 2018).

Importance is the mean magnitude of the gradient of the squared L2 norm of the network's output,
over the most recent ``samples`` samples at the anchor (no labels needed):

.. math::

    \Omega_k = \frac{1}{N} \sum_{n=1}^{N} \left| \frac{\partial \lVert f(x_n) \rVert_2^2}{\partial \theta_k} \right|

(on the task's head only when a class mask is given). One quadratic per anchor, like EWC.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .base import Strategy
from .persample import mean_per_sample_grad


class MAS(Strategy):
    name = "mas"
    form = "weighted"

    def __init__(self, params: Mapping[str, nn.Parameter], model: nn.Module, *, samples: int = 1000):
        if samples < 1:
            raise ValueError("samples must be >= 1")
        self.samples = int(samples)
        self.buffer_size = self.samples
        super().__init__(params, model)

    @property
    def hyperparameters(self) -> dict:
        return {"samples": self.samples}

    def consolidate(self, data=None):
        if data is None or data[0].shape[0] == 0:
            return None
        x, y, classes = data

        def sq_norm(logits, label):
            if classes is not None:
                logits = logits[:, list(classes)]
            return logits.pow(2).sum()

        return mean_per_sample_grad(self._model, list(self._params), x, y, sq_norm, "abs")
