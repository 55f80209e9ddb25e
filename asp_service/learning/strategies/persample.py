"""Means over samples of a function of each sample's own gradient (EWC's Fisher, MAS).

A mini-batch gradient cannot give them: they need every sample's gradient squared (EWC) or in
magnitude (MAS). For a Linear layer the per-sample weight gradient is the outer product
``delta_b a_b^T`` of the gradient at the layer's output and its input, so

.. math::

    \\sum_b (\\delta_b a_b^\\top)^{\\circ 2} = (\\delta^{\\circ 2})^\\top a^{\\circ 2}, \\qquad
    \\sum_b |\\delta_b a_b^\\top| = |\\delta|^\\top |a|

is one matrix product per layer (exact; the trick of BackPACK's first-order extensions). Chains of
Linear layers (with ReLU, Flatten, Dropout between them) take this path; any other model falls
back to ``torch.func.vmap(grad(.))`` in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

REDUCTIONS = {"square": lambda g: g.pow(2), "abs": lambda g: g.abs()}


def class_mask(n_out: int, classes: Sequence[int] | None, device) -> Tensor | None:
    """Additive logit mask: 0 for allowed classes, -inf elsewhere (None when all are allowed)."""
    if classes is None:
        return None
    mask = torch.full((n_out,), float("-inf"), device=device)
    mask[torch.as_tensor(list(classes), device=device, dtype=torch.long)] = 0.0
    return mask


def _linear_chain(model: nn.Module) -> list[nn.Module] | None:
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model.children())
    ok = all(isinstance(m, (nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout, nn.Identity)) for m in layers)
    return layers if ok and any(isinstance(m, nn.Linear) for m in layers) else None


def mean_per_sample_grad(
    model: nn.Module,
    names: Sequence[str],
    x: Tensor,
    y: Tensor,
    scalar: Callable[[Tensor, Tensor], Tensor],
    reduce: str,
    *,
    chunk: int = 128,
) -> dict[str, Tensor]:
    """``mean_b reduce(d scalar(model(x_b), y_b) / d theta)`` for each named parameter.

    ``scalar(logits (B, C), labels (B,))`` must be a sum of independent per-sample terms;
    ``reduce`` is ``"square"`` or ``"abs"``. The model's train/eval mode is restored afterwards.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {tuple(REDUCTIONS)}")
    was_training = model.training
    model.eval()
    try:
        chain = _linear_chain(model)
        if chain is not None:
            acc = _linear_chain_stat(model, chain, x, y, scalar, reduce, chunk)
        else:
            acc = _vmap_stat(model, names, x, y, scalar, reduce, chunk)
    finally:
        model.train(was_training)
    n = max(1, x.shape[0])
    return {k: acc[k].div_(n) for k in names}


def _linear_chain_stat(model, chain, x, y, scalar, reduce, chunk) -> dict[str, Tensor]:
    ids = {id(p): n for n, p in model.named_parameters()}
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    f = REDUCTIONS[reduce]
    for start in range(0, x.shape[0], max(chunk, 1024)):
        h = x[start : start + max(chunk, 1024)]
        lin_inputs, lin_outputs = [], []
        with torch.enable_grad():
            for m in chain:
                if isinstance(m, nn.Linear):
                    lin_inputs.append(h.detach())
                    h = m(h)
                    lin_outputs.append(h)
                else:
                    h = m(h)
            deltas = torch.autograd.grad(scalar(h, y[start : start + h.shape[0]]), lin_outputs)
        with torch.no_grad():
            lins = [m for m in chain if isinstance(m, nn.Linear)]
            for m, a, d in zip(lins, lin_inputs, deltas):
                acc[ids[id(m.weight)]].addmm_(f(d).t(), f(a))
                if m.bias is not None:
                    acc[ids[id(m.bias)]].add_(f(d).sum(0))
    return acc


def _vmap_stat(model, names, x, y, scalar, reduce, chunk) -> dict[str, Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    wanted = set(names)
    f = REDUCTIONS[reduce]

    def one(p: Mapping[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (dict(p), buffers), (xi.unsqueeze(0),))
        return scalar(out, yi.unsqueeze(0))

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    acc = {n: torch.zeros_like(params[n]) for n in names}
    for start in range(0, x.shape[0], chunk):
        grads = per_sample(params, x[start : start + chunk], y[start : start + chunk])
        for n, g in grads.items():
            if n in wanted:
                acc[n].add_(f(g).sum(0))
    return acc
