r"""Excitation backprop (EB) and contrastive excitation backprop (c-EB).

Zhang et al., "Top-down neural attention by excitation backprop" (IJCV 2018), as fixed by the
project's ALGORITHM.md. For a synaptic layer with input activations :math:`a^{l-1} \ge 0` and
weights :math:`W`, a top-down probability :math:`P^l` over its outputs moves down as

.. math::

    W^+ = \max(W, 0), \qquad Z_i = \sum_j a^{l-1}_j W^+_{ij}, \qquad
    P^{l-1}_j = a^{l-1}_j \sum_i W^+_{ij} \frac{P^l_i}{Z_i}

(biases ignored; terms with :math:`Z_i = 0` contribute 0). Batched this is
``a_prev * ((P / Z) @ W+)``; for Conv2d the product is the transposed convolution of ``P / Z``
with ``W+``. Max pooling routes the signal to the winning input, average pooling divides it
evenly over its window, Flatten reshapes, ReLU (and Dropout, Identity) pass it unchanged.

c-EB: :math:`P^L` is the one-hot target; at the top layer the signal goes down once with
:math:`W^+` and once with :math:`\max(-W, 0)`; the signed difference :math:`D^{L-1}` then moves
down with the ordinary rule (EB is linear in its signal below the top), and each layer's map is
:math:`Pc^l = \mathrm{ReLU}(D^l) / \sum \mathrm{ReLU}(D^l)` (zeros where the sum is 0).

Inputs must be non-negative (images in [0, 1]). If an input has negative entries, each sample is
shifted by its minimum before the attention pass (``a^0 - min(a^0)``); the forward pass itself is
not changed. Hidden activations are post-ReLU and thus non-negative.

Nothing here patches torch: the pass reads the layers' weights and the activations recorded by
:func:`forward_with_inputs`, so it is safe to call from several threads at once.

Example
-------
>>> import torch
>>> from asp_service.learning.models import mlp
>>> torch.manual_seed(0) and None
>>> net = mlp(4, [3], 2)
>>> maps = contrastive_excitation_backprop(net, torch.rand(5, 4), torch.tensor([0, 1, 0, 1, 0]))
>>> [tuple(m.shape) for m in maps]
[(5, 4), (5, 3), (5, 2)]
>>> bool(torch.all((maps[0].sum(1) - 1).abs() < 1e-5) or torch.all(maps[0].sum(1) == 0))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SYNAPTIC = (nn.Linear, nn.Conv2d)
PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Identity)
SUPPORTED = SYNAPTIC + PASS_THROUGH + (nn.Flatten, nn.MaxPool2d, nn.AvgPool2d)


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """Flatten (nested) ``nn.Sequential`` into its leaf layers, checking each is supported."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"attention needs an nn.Sequential model, got {type(model).__name__}")
    layers: list[nn.Module] = []
    for m in model.children():
        if isinstance(m, nn.Sequential):
            layers += sequential_layers(m)
        elif isinstance(m, SUPPORTED):
            layers.append(m)
        else:
            raise TypeError(f"excitation backprop does not support layer {type(m).__name__}")
    synaptic = [i for i, m in enumerate(layers) if isinstance(m, SYNAPTIC)]
    if not synaptic:
        raise TypeError("the model has no Linear or Conv2d layer")
    if not isinstance(layers[synaptic[-1]], nn.Linear) or any(
        not isinstance(m, (nn.Dropout, nn.Identity)) for m in layers[synaptic[-1] + 1 :]
    ):
        raise TypeError("the model must end in a Linear layer that gives the logits")
    for i in synaptic:
        conv = layers[i]
        if isinstance(conv, nn.Conv2d) and conv.padding_mode != "zeros":
            raise TypeError("only zero-padded Conv2d layers are supported")
    return layers


def forward_with_inputs(layers: Sequence[nn.Module], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Run the chain and return (output, the input of every layer). Autograd is left as it is."""
    inputs = []
    for layer in layers:
        inputs.append(x)
        x = layer(x)
    return x, inputs


_TINY = 1e-12


def _eb_synaptic(layer: nn.Module, a: Tensor, signal: Tensor, w: Tensor) -> Tensor:
    """One EB step through a Linear or Conv2d layer with the (already non-negative) weights ``w``.

    Dividing by ``max(Z, tiny)`` instead of testing ``Z > 0`` is exact for the rule: ``Z_i = 0``
    with ``a >= 0`` and ``w >= 0`` means every ``a_j w_ij`` is 0, so unit ``i`` hands nothing down
    whatever its (finite) ratio.

    The two products run in ``w``'s dtype (see ``compute_dtype`` in :func:`attention_from_inputs`);
    the ratio ``P / Z`` and the returned signal stay in ``signal``'s dtype.
    """
    lowp = w.dtype != signal.dtype
    a_w = a.to(w.dtype) if lowp else a
    if isinstance(layer, nn.Linear):
        z = (a_w @ w.t()).clamp_(min=_TINY)
    else:
        conv: nn.Conv2d = layer  # type: ignore[assignment]
        z = F.conv2d(a_w, w, None, conv.stride, conv.padding, conv.dilation, conv.groups).clamp_(min=_TINY)
    # P / Z in float32, stored in w's dtype for the second product (in place when that is float32).
    ratio = torch.div(signal, z, out=z)
    if isinstance(layer, nn.Linear):
        back = ratio @ w
    else:
        back = torch.nn.grad.conv2d_input(a.shape, w, ratio, conv.stride, conv.padding, conv.dilation, conv.groups)
    # back * a, promoted to the signal's dtype in the same operation.
    return torch.mul(back, a) if lowp else back.mul_(a)


def _eb_top(layer: nn.Linear, a: Tensor, p: Tensor, contrastive: bool) -> Tensor:
    """The top layer: EB with ``W+``, minus (c-EB) EB with ``max(-W, 0)``, in one product each way.

    Stacking ``[W+; W-]`` gives ``[Z+, Z-]`` from one product and ``(P/Z+) W+ - (P/Z-) W-`` from
    one more, which is exactly the difference of the two passes.
    """
    w = layer.weight.detach()
    if not contrastive:
        return _eb_synaptic(layer, a, p, w.clamp(min=0))
    w_pm = torch.cat([w.clamp(min=0), (-w).clamp(min=0)])
    z = (a @ w_pm.t()).clamp_(min=_TINY)
    ratio = torch.cat([p, -p], 1).div_(z)
    return (ratio @ w_pm).mul_(a)


def _positive(w: Tensor, workspace: dict | None, key, dtype: torch.dtype | None = None) -> Tensor:
    """``max(W, 0)`` in ``dtype`` (default: ``W``'s), in a buffer kept in ``workspace``."""
    dtype = w.dtype if dtype is None else dtype
    if workspace is None:
        return w.clamp(min=0).to(dtype)
    buf = workspace.get(key)
    if buf is None or buf.shape != w.shape or buf.device != w.device or buf.dtype != dtype:
        buf = workspace[key] = torch.empty_like(w, dtype=dtype, memory_format=torch.contiguous_format)
    if dtype == w.dtype:
        return torch.clamp(w, min=0, out=buf)
    buf.copy_(w)  # convert first: the clamp then runs on half the bytes
    if buf.element_size() == 2:
        # A 16-bit float is negative exactly when its bits, read as int16, are: clamping those
        # bits at 0 is max(w, 0) (and -0.0 -> +0.0), about 7x faster than the float clamp.
        buf.view(torch.int16).clamp_(min=0)
        return buf
    return buf.clamp_(min=0)


def _eb_pool(layer: nn.Module, a: Tensor, signal: Tensor) -> Tensor:
    if isinstance(layer, nn.MaxPool2d):
        _, idx = F.max_pool2d(
            a, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode, return_indices=True
        )
        out = torch.zeros(a.shape[0], a.shape[1], a.shape[2] * a.shape[3], dtype=signal.dtype, device=signal.device)
        out.scatter_add_(2, idx.flatten(2), signal.flatten(2))
        return out.view_as(a)
    # Average pooling: each pooled unit hands its signal to its window in equal shares, which is
    # exactly the vector-Jacobian product of avg_pool2d.
    with torch.enable_grad():
        a_ = a.detach().requires_grad_(True)
        y = F.avg_pool2d(
            a_, layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
            layer.count_include_pad, layer.divisor_override,
        )
        (g,) = torch.autograd.grad(y, a_, signal)
    return g


def normalize_map(d: Tensor, how: str = "sum") -> Tensor:
    """``ReLU(d)`` divided per sample by its sum (or its maximum); all zeros where that is 0."""
    r = d.clamp(min=0)
    if how == "sum":
        s = r.sum(tuple(range(1, r.dim())), keepdim=True)
    elif how == "max":
        s = r.amax(tuple(range(1, r.dim())), keepdim=True)
    else:
        raise ValueError(f"normalize must be 'sum' or 'max', got {how!r}")
    # Where the sum is 0 every entry is 0, and 0 / tiny stays 0.
    return r.div_(s.clamp_(min=_TINY))


def attention_from_inputs(
    layers: Sequence[nn.Module],
    inputs: Sequence[Tensor],
    target: Tensor,
    *,
    contrastive: bool = True,
    normalize: str = "sum",
    with_layer_inputs: bool = False,
    workspace: dict | None = None,
    compute_dtype: torch.dtype | None = None,
    check_target: bool = True,
):
    """(c-)EB maps from activations already recorded by :func:`forward_with_inputs`.

    This is the training path: the learner's forward pass records the inputs once and the
    attention pass reuses them. Returns ``[Pc^0, ..., Pc^L]`` (see module docstring). With
    ``with_layer_inputs`` it also returns, per synaptic layer, the normalised map over that
    layer's own input (after pooling and flattening), which is what Oja's rule pairs with the
    layer's output map; for an MLP these are exactly ``Pc^0 .. Pc^{L-1}``. A ``workspace`` dict
    kept by the caller between calls holds the positive-weight buffers, so that the training hot
    path allocates no weight-sized tensors (not thread-safe: one workspace per writer).

    ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the two products of every layer below the
    top in that dtype, with float32 accumulation inside the product and the ratios, signals and
    maps kept in float32. The rule is unchanged; the products are rounded to bfloat16's 8-bit
    mantissa (relative error about 0.4 % per entry). ``None`` keeps the inputs' dtype (exact).
    ``check_target=False`` skips the label checks (for callers that have checked them already).
    """
    synaptic = [i for i, m in enumerate(layers) if isinstance(m, SYNAPTIC)]
    top = synaptic[-1]
    with torch.no_grad():
        n_out = layers[top].out_features
        target = target.to(inputs[0].device).long()
        if target.dim() != 1 or target.shape[0] != inputs[0].shape[0]:
            raise ValueError("target must hold one label per sample")
        if check_target and target.numel() and (target.min() < 0 or target.max() >= n_out):
            raise ValueError(f"target labels must lie in [0, {n_out})")
        p_top = inputs[top].new_zeros((target.shape[0], n_out)).scatter_(1, target.unsqueeze(1), 1.0)
        maps: list[Tensor] = [p_top]
        in_maps: list[Tensor] = []
        signal = _eb_top(layers[top], inputs[top].detach(), p_top, contrastive)
        # The normalised current signal, kept while only pass-through layers follow.
        current = normalize_map(signal, normalize)
        in_maps.append(current)
        # EB needs a non-negative input: shift each sample by its minimum where it is negative.
        # Layers up to the first synaptic one only reshape or pool the raw input, so the same
        # per-sample shift applies to each of their inputs.
        shift = None
        if bool(inputs[0].detach().amin() < 0):
            shift = inputs[0].detach().flatten(1).amin(1).clamp(max=0)
        for i in range(top - 1, -1, -1):
            layer = layers[i]
            a = inputs[i].detach()
            if shift is not None and i <= synaptic[0]:
                a = a - shift.view(-1, *([1] * (a.dim() - 1)))
            if isinstance(layer, SYNAPTIC):
                if current is None:
                    current = normalize_map(signal, normalize)
                maps.append(current)
                w_pos = _positive(layer.weight.detach(), workspace, i, compute_dtype)
                signal = _eb_synaptic(layer, a, signal, w_pos)
                current = normalize_map(signal, normalize)
                in_maps.append(current)
            elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                signal = _eb_pool(layer, a, signal)
                current = None
            elif isinstance(layer, nn.Flatten):
                signal = signal.reshape(a.shape)
                current = None if current is None else current.reshape(a.shape)
            # ReLU, Dropout, Identity: the signal passes unchanged.
        maps.append(current if current is not None else normalize_map(signal, normalize))
    maps.reverse()
    in_maps.reverse()
    return (maps, in_maps) if with_layer_inputs else maps


def _run(model: nn.Module, x: Tensor, target: Tensor, contrastive: bool, normalize: str) -> list[Tensor]:
    layers = sequential_layers(model)
    p = next(model.parameters())
    with torch.no_grad():
        _, inputs = forward_with_inputs(layers, x.to(device=p.device, dtype=p.dtype))
    return attention_from_inputs(layers, inputs, target, contrastive=contrastive, normalize=normalize)


def contrastive_excitation_backprop(
    model: nn.Module, x: Tensor, target: Tensor, *, normalize: str = "sum"
) -> list[Tensor]:
    """c-EB maps ``[Pc^0, ..., Pc^L]`` for a batch ``x`` and one target label per sample.

    ``Pc^0`` has the input's shape and is the attention map over the input; conv layers give
    ``(batch, C, H, W)`` maps, linear layers ``(batch, n_l)``. ``normalize="max"`` divides by the
    per-sample maximum instead of the sum (an option of ALGORITHM.md, not the default).
    The model's train/eval mode and ``requires_grad`` flags are not touched.
    """
    return _run(model, x, target, True, normalize)


def excitation_backprop(model: nn.Module, x: Tensor, target: Tensor, *, normalize: str = "sum") -> list[Tensor]:
    """Plain (non-contrastive) EB maps ``[P^0, ..., P^L]``, normalised like c-EB."""
    return _run(model, x, target, False, normalize)
