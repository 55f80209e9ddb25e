r"""Elastic weight consolidation (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018).

Importance is the diagonal of the Fisher information, estimated at the anchor from the most
recent ``fisher_samples`` samples (the end of the task, in task-aware mode):

.. math::

    F_k = \frac{1}{N} \sum_{n=1}^{N} \left( \frac{\partial \log p(\hat y_n \mid x_n)}{\partial \theta_k} \right)^2

with :math:`\hat y_n` the model's prediction (``fisher_labels="pred"``, the true Fisher's most
likely label as in van de Ven's reference code) or the given label (``"true"``, the empirical
Fisher). EWC keeps one quadratic per anchor (the ``"weighted"`` penalty form); online EWC keeps
one anchor at the latest parameters with :math:`\Gamma \leftarrow \text{decay}\cdot\Gamma + F`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import nn

from .base import Strategy
from .persample import class_mask, mean_per_sample_grad


class EWC(Strategy):
    name = "ewc"
    form = "weighted"

    def __init__(self, params: Mapping[str, nn.Parameter], model: nn.Module, *, fisher_samples: int = 1000,
                 fisher_labels: str = "pred"):
        if fisher_samples < 1:
            raise ValueError("fisher_samples must be >= 1")
        if fisher_labels not in ("pred", "true"):
            raise ValueError("fisher_labels must be 'pred' or 'true'")
        self.fisher_samples = int(fisher_samples)
        self.fisher_labels = fisher_labels
        self.buffer_size = self.fisher_samples
        super().__init__(params, model)

    @property
    def hyperparameters(self) -> dict:
        return {"fisher_samples": self.fisher_samples, "fisher_labels": self.fisher_labels}

    def consolidate(self, data=None):
        if data is None or data[0].shape[0] == 0:
            return None
        x, y, classes = data

        def log_lik(logits, label):
            mask = class_mask(logits.shape[1], classes, logits.device)
            if mask is not None:
                logits = logits + mask
            if self.fisher_labels == "pred":
                label = logits.argmax(1).detach()
            return -F.cross_entropy(logits, label, reduction="sum")

        return mean_per_sample_grad(self._model, list(self._params), x, y, log_lik, "square")


class OnlineEWC(EWC):
    name = "online_ewc"
    form = "latest"
