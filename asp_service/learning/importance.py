r"""Synaptic importance from attention by Oja's rule (Kolouri et al. 2019, Eq. 4).

For the synapse from unit :math:`j` of layer :math:`l-1` to unit :math:`i` of layer :math:`l`,
starting from :math:`\gamma = 0`:

.. math::

    \gamma_{ij} \leftarrow \gamma_{ij} + \epsilon \left( Pc^{l-1}_j Pc^l_i - (Pc^l_i)^2 \gamma_{ij} \right)

For a batch of :math:`B` samples both terms are averaged over the batch:

.. math::

    \gamma \leftarrow \gamma (1 - \epsilon\, \overline{(Pc^l)^2}) + \frac{\epsilon}{B} Pc_{post}^\top Pc_{pre}

which is one fused matrix product per layer (``addmm``). Biases get no importance.

During training ASP keeps :math:`\gamma` in :class:`LazyOja`: a per-row scale times an
accumulator (the decay multiplies a whole row by one number, so it moves into the scale), with
the Hebbian terms of several steps added by one product. Same rule, fewer passes over
weight-sized tensors.

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
    return gamma.addmm_(post.t(), pre, alpha=eps / b)


def oja_update_conv(gamma: Tensor, pre: Tensor, post: Tensor, eps: float, conv: nn.Conv2d) -> Tensor:
    """Oja update for a Conv2d kernel: ``gamma`` has the weight's shape, maps are (B, C, H, W)."""
    b = pre.shape[0]
    hebb = torch.nn.grad.conv2d_weight(pre, gamma.shape, post, conv.stride, conv.padding, conv.dilation, conv.groups)
    decay = post.pow(2).sum((2, 3)).mean(0).mul_(-eps).add_(1.0)
    gamma.mul_(decay.view(-1, 1, 1, 1))
    gamma.add_(hebb, alpha=eps / b)
    return gamma


class LazyOja:
    r"""One layer's Oja importance (Eq. 4), kept so that a training step touches no weight-sized tensor.

    .. math::

        \gamma = s \odot \Big(A + \sum_{k\ \mathrm{pending}} \tfrac{\epsilon}{B_k} (Pc^{(k)}_{post} / s_k)^\top Pc^{(k)}_{pre}\Big)

    - Each output unit's decay :math:`d_i = 1 - \epsilon\,\overline{(Pc^l_i)^2}` multiplies its whole
      row, so it moves into the per-unit scale: :math:`s \leftarrow s\,d`.
    - Each step's Hebbian term, divided by the new scale, is not added at once: its two maps go into
      a row buffer (``rows`` samples), and when the buffer is full one matrix product with all the
      buffered rows adds every pending term to :math:`A`.

    This is :func:`oja_update` applied step by step, up to rounding, with one pass over
    :math:`A` every ``rows / B`` steps instead of two passes per step. Where a scale would fall
    below ``floor`` (or a decay is not positive), the pending terms are added, the scale is folded
    into :math:`A` and the step is applied as it is. Conv2d layers (``conv``) add their term at
    every step (their maps are too large to buffer). ``compute_dtype`` (e.g. ``torch.bfloat16``)
    stores the buffered maps and runs the product in that dtype (float32 accumulation inside the
    product); :math:`A` and the scale keep the weight's dtype.
    """

    def __init__(self, weight: Tensor, *, conv: nn.Conv2d | None = None,
                 compute_dtype: torch.dtype | None = None, rows: int = 800, floor: float = 1e-4):
        self.conv = conv
        self.compute_dtype = weight.dtype if compute_dtype is None else compute_dtype
        self.rows = 0 if conv is not None else int(rows)
        self.floor = float(floor)
        self.acc = torch.zeros_like(weight, memory_format=torch.contiguous_format).detach()
        self.scale = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
        self._pre: Tensor | None = None
        self._post: Tensor | None = None
        self._fill = 0

    def _view(self, v: Tensor, batch_dim: bool) -> Tensor:
        if self.conv is not None:
            return v.view(1, -1, 1, 1) if batch_dim else v.view(-1, 1, 1, 1)
        return v if batch_dim else v.view(-1, 1)

    def update(self, pre: Tensor, post: Tensor, eps: float) -> None:
        """One step: maps ``pre`` (B x in, or B x C x H x W) and ``post`` (B x out, or B x C' x H' x W')."""
        b = pre.shape[0]
        sq = post.square().sum((0, 2, 3) if self.conv is not None else 0)
        new = torch.addcmul(self.scale, self.scale, sq, value=-eps / b)  # s * d
        if new.min().item() < self.floor:
            self.flush()
            self.acc.mul_(self._view(new, False))  # the old scale and this step's decay, directly
            self.scale.fill_(1.0)
            divisor = new.fill_(b / eps)
        else:
            self.scale.copy_(new)
            divisor = new.mul_(b / eps)
        if b > self.rows:
            self._add(pre, post / self._view(divisor, True))
            return
        if self._fill + b > self.rows:
            self.flush()
        if self._pre is None:
            self._allocate(pre.shape[1:], post.shape[1:])
        rows = slice(self._fill, self._fill + b)
        self._pre[rows].copy_(pre)
        torch.div(post, self._view(divisor, True), out=self._post[rows])
        self._fill += b

    def _allocate(self, pre_shape, post_shape) -> None:
        like = dict(dtype=self.compute_dtype, device=self.acc.device)
        self._pre = torch.empty((self.rows, *pre_shape), **like)
        self._post = torch.empty((self.rows, *post_shape), **like)

    def _add(self, pre: Tensor, post: Tensor, into: Tensor | None = None) -> None:
        acc = self.acc if into is None else into
        pre, post = pre.to(self.compute_dtype), post.to(self.compute_dtype)
        if self.conv is not None:
            c = self.conv
            acc.add_(torch.nn.grad.conv2d_weight(pre, acc.shape, post, c.stride, c.padding, c.dilation, c.groups))
        elif self.compute_dtype == acc.dtype:
            acc.addmm_(post.t(), pre)
        else:
            acc.add_(post.t() @ pre)

    def flush(self) -> None:
        """Add the buffered Hebbian terms to the accumulator."""
        if self._fill:
            self._add(self._pre[: self._fill], self._post[: self._fill])
            self._fill = 0

    def gamma(self) -> Tensor:
        """The importance now, as a new tensor (the state is left exactly as it is)."""
        out = self.acc.clone()
        if self._fill:
            self._add(self._pre[: self._fill], self._post[: self._fill], into=out)
        return out.mul_(self._view(self.scale, False))

    def reset(self) -> None:
        self.acc.zero_()
        self.scale.fill_(1.0)
        self._fill = 0

    def state_dict(self) -> dict:
        pending = self._fill and (self._pre[: self._fill].clone(), self._post[: self._fill].clone())
        return {"acc": self.acc.clone(), "scale": self.scale.clone(), "pending": pending or None}

    def load_state_dict(self, state) -> None:
        self.reset()
        self.acc.copy_(state["acc"])
        self.scale.copy_(state["scale"])
        if state.get("pending"):
            pre, post = state["pending"]
            if pre.shape[0] > self.rows:
                self._add(pre, post)
                return
            self._allocate(pre.shape[1:], post.shape[1:])
            self._pre[: pre.shape[0]].copy_(pre)
            self._post[: pre.shape[0]].copy_(post)
            self._fill = pre.shape[0]
