"""Experiment (not used by the product): does a sparse first layer pay on a CPU without bfloat16?

On a CPU with AVX2 only, ASP's products run in float32 and cost 0.82x vanilla's step. The first
layer is most of them, and 81 % of MNIST's pixels are 0, so its three products could skip them:
``Z = x W+^T`` and the signal sent back ``x * ((P/Z) W+)`` only over non-zero pixels, and the
Hebbian term ``Pc_post^T Pc_pre`` only over non-zero ``Pc_pre``. This times, for real MNIST
batches of 100, the first layer's work per step both ways, interleaved, 1 thread:

- dense (what ASP does, float32): ``W+`` into a buffer, the two products, the Hebbian product
  of one batch (ASP buffers 8 batches per product; the rate is the same);
- sparse: ``W+`` transposed (one row per pixel, needed to visit pixels), then plain C loops
  (``sparse_first_layer.c``, compiled with gcc at start) for the same three results.

It checks that both give the same ``Z`` and signal, then prints medians::

    .venv/bin/python -m benchmarks.experiments.sparse_first_layer --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from . import SPARSE_KERNELS, compile_c, ptr


def main() -> None:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    k = compile_c(Path(__file__).with_suffix(".c"), SPARSE_KERNELS)
    x_all = torchvision.datasets.MNIST(args.data_dir, train=True, download=False).data[:5000].float().div(255).view(-1, 784)
    B, n_in, n_out = 100, 784, 400
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n_out, n_in, generator=g) * 0.05
    ratio = torch.randn(B, n_out, generator=g) * 1e-3
    post = torch.rand(B, n_out, generator=g) * (torch.rand(B, n_out, generator=g) < 0.5)  # maps are ~half zero
    w_pos, w_pos_t = torch.empty_like(w), torch.empty(n_in, n_out)
    acc, acc_t, tmp = torch.zeros(n_out, n_in), torch.zeros(n_in, n_out), torch.empty(n_out)
    z, signal = torch.empty(B, n_out), torch.empty(B, n_in)

    def dense(x):
        torch.clamp(w, min=0, out=w_pos)
        x @ w_pos.t()
        pre = (ratio @ w_pos).mul_(x).clamp_(min=0)
        acc.addmm_(post.t(), pre)

    def sparse(x):
        k.pos_T(ptr(w), n_out, n_in, ptr(w_pos_t))
        k.z_sparse(ptr(x), ptr(w_pos_t), B, n_in, n_out, ptr(z))
        k.back_sparse(ptr(x), ptr(ratio), ptr(w_pos_t), B, n_in, n_out, ptr(signal))
        k.hebb_T(ptr(signal.clamp_(min=0)), ptr(post), B, n_in, n_out, ptr(acc_t), ptr(tmp))

    x = x_all[:B].contiguous()
    sparse(x)
    torch.clamp(w, min=0, out=w_pos)
    k.back_sparse(ptr(x), ptr(ratio), ptr(w_pos_t), B, n_in, n_out, ptr(signal))
    print(f"max |difference|: Z {float((z - x @ w_pos.t()).abs().max()):.1e}, "
          f"signal {float((signal - (ratio @ w_pos) * x).abs().max()):.1e}")
    print(f"non-zero pixels: {float((x_all != 0).float().mean()):.1%}")
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for r in range(args.rounds):
        x = x_all[(r % 50) * B:(r % 50 + 1) * B].contiguous()
        for name in (("dense", "sparse") if r % 2 else ("sparse", "dense")):
            start = time.perf_counter()
            (dense if name == "dense" else sparse)(x)
            times[name].append(time.perf_counter() - start)
    d, s = (1e3 * float(np.median(times[n])) for n in ("dense", "sparse"))
    print(f"first layer per step (median of {args.rounds}): dense {d:.3f} ms, sparse {s:.3f} ms, saved {d - s:.3f} ms")


if __name__ == "__main__":
    main()
