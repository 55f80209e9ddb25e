r"""Synaptic importance from attention by Oja's rule (Kolouri et al. 2019, Eq. 4).

For the synapse from unit :math:`j` of layer :math:`l-1` to unit :math:`i` of layer :math:`l`,
starting from :math:`\gamma = 0`:

.. math::

    \gamma_{ij} \leftarrow \gamma_{ij} + \epsilon \left( Pc^{l-1}_j Pc^l_i - (Pc^l_i)^2 \gamma_{ij} \right)

For a batch of :math:`B` samples both terms are averaged over the batch:

.. math::

    \gamma \leftarrow \gamma (1 - \epsilon\, \overline{(Pc^l)^2}) + \frac{\epsilon}{B} Pc_{post}^\top Pc_{pre}

which is one fused matrix product per layer (``addmm``). Biases get no importance.

Conv2d layers (an extension of ours: the paper has only fully connected layers): a kernel entry is
one synapse shared by every position, so the Hebbian term sums pre x post over the positions it
connects (the same product as the weight gradient of the convolution) and the decay term sums
:math:`(Pc^l)^2` over the output map's positions.

>>> import torch
>>> g = torch.zeros(2, 3)
>>> pre = torch.tensor([[0.5, 0.5, 0.0]]); post = torch.tensor([[1.0, 0.0]])
>>> for _ in range(200): g = oja_update(g, pre, post, eps=0.1)
>>> g  # fixed point: pre_j * post_i / post_i^2 where post_i > 0
tensor([[0.5000, 0.5000, 0.0000],
        [0.0000, 0.0000, 0.0000]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def oja_update(gamma: Tensor, pre: Tensor, post: Tensor, eps: float) -> Tensor:
    """Batched Oja update of ``gamma`` (out x in) from maps ``pre`` (B x in) and ``post`` (B x out).

    Updates ``gamma`` in place and returns it.
    """
    if pre.dim() != 2 or post.dim() != 2 or pre.shape[0] != post.shape[0]:
        raise ValueError("pre and post must be (batch, units) with the same batch size")
    if gamma.shape != (post.shape[1], pre.shape[1]):
        raise ValueError(f"gamma must be {(post.shape[1], pre.shape[1])}, got {tuple(gamma.shape)}")
    b = pre.shape[0]
    decay = post.pow(2).mean(0).mul_(-eps).add_(1.0)
    gamma.mul_(decay.unsqueeze(1))
    gamma.addmm_(post.t(), pre, alpha=eps / b)
    return gamma


def oja_update_conv(gamma: Tensor, pre: Tensor, post: Tensor, eps: float, conv: nn.Conv2d) -> Tensor:
    """Oja update for a Conv2d kernel: ``gamma`` has the weight's shape, maps are (B, C, H, W)."""
    b = pre.shape[0]
    hebb = torch.nn.grad.conv2d_weight(pre, gamma.shape, post, conv.stride, conv.padding, conv.dilation, conv.groups)
    decay = post.pow(2).sum((2, 3)).mean(0).mul_(-eps).add_(1.0)
    gamma.mul_(decay.view(-1, 1, 1, 1))
    gamma.add_(hebb, alpha=eps / b)
    return gamma
