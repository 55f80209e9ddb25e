"""Per-sample gradients over a batch of stored samples, reduced on the fly (torch.func).

EWC's Fisher and MAS's importance are means over samples of a function of each sample's own
gradient (its square, its magnitude), which a mini-batch gradient cannot give. ``vmap(grad(.))``
computes them in chunks without a Python loop per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def class_mask(n_out: int, classes: Sequence[int] | None, device) -> Tensor | None:
    """Additive logit mask: 0 for allowed classes, -inf elsewhere (None when all are allowed)."""
    if classes is None:
        return None
    mask = torch.full((n_out,), float("-inf"), device=device)
    mask[torch.as_tensor(list(classes), device=device, dtype=torch.long)] = 0.0
    return mask


def mean_per_sample_grad(
    model: nn.Module,
    names: Sequence[str],
    x: Tensor,
    y: Tensor,
    scalar: Callable[[Tensor, Tensor], Tensor],
    reduce: Callable[[Tensor], Tensor],
    *,
    chunk: int = 128,
) -> dict[str, Tensor]:
    """``mean_b reduce(d scalar(model(x_b), y_b) / d theta)`` for each named parameter.

    ``scalar(logits (1, C), label (1,))`` gives the per-sample quantity to differentiate.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    wanted = set(names)

    def f(p: Mapping[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (dict(p), buffers), (xi.unsqueeze(0),))
        return scalar(out, yi.unsqueeze(0))

    per_sample = vmap(grad(f), in_dims=(None, 0, 0))
    acc = {n: torch.zeros_like(params[n]) for n in names}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], chunk):
            grads = per_sample(params, x[start : start + chunk], y[start : start + chunk])
            for n, g in grads.items():
                if n in wanted:
                    acc[n].add_(reduce(g).sum(0))
    finally:
        model.train(was_training)
    n = max(1, x.shape[0])
    return {k: v.div_(n) for k, v in acc.items()}
