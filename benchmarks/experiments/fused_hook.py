"""Experiment (not used by the product): ASP's per-step hook with its element-wise work in C.

Question: would fused kernels bring ASP's step to 1.5x vanilla's? ``FusedASP`` moves everything
in the hook except the matrix products (positive weights, top layer, map normalisation, ratios,
Oja's scale bookkeeping and row writes) into the plain C loops of ``fused_hook.c``, for
``mlp(784, [400, 400], 10)`` at batch 100 with bfloat16 products, and keeps the products in
torch. ``SparseFirstLayer`` also computes the first layer over the input's non-zero pixels only.
The script first checks each variant's importance against ASP's own after 50 steps, then times
vanilla, ASP and the variants interleaved (16-step blocks, anchored, 1 thread), with the time
inside the hook::

    .venv/bin/python -m benchmarks.experiments.fused_hook --data-dir ../shared/data

Needs gcc (compiled into a temporary folder at start) and a CPU with AVX512-BF16 for a fair
comparison (ASP's default precision there is bfloat16).
"""

from __future__ import annotations

import argparse
import ctypes
from pathlib import Path

import torch

from asp_service.learning import OnlineLearner
from asp_service.learning.models import mlp

from ..step_cost import measure_step_cost
from . import F, I, L, P, SPARSE_KERNELS, compile_c
from . import ptr as p

bf = torch.bfloat16
K = None


def _load() -> ctypes.CDLL:
    return compile_c(Path(__file__).with_suffix(".c"), {
        "pos_bf16": [P, L, P], "cvt_bf16": [P, L, P], "top": [P, P, P, L, L, P], "norm": [P, L, L, P, P, P],
        "post": [P, P, L, L, P], "ratio": [P, P, L, P], "back": [P, P, L, P], "scale": [P, P, L, F, L, F, P],
        "ratio_f32": [P, P, L, P], "post_f32": [P, P, L, L, P], **SPARSE_KERNELS}, {"scale": I})


class FusedASP:
    """Replacement for ASP.after_backward on mlp(784,[400,400],10): same rule, fused element-wise work."""
    def __init__(self, model, B=100, rows=800, eps=1.0):
        self.lin = [m for m in model if isinstance(m, torch.nn.Linear)]
        self.B, self.rows, self.eps = B, rows, eps
        dims = [(l.out_features, l.in_features) for l in self.lin]
        self.acc = [torch.zeros(o, i) for o, i in dims]
        self.scale = [torch.ones(o) for o, i in dims]
        self.div = [torch.empty(o) for o, i in dims]
        self.pre = [torch.empty(rows, i, dtype=bf) for o, i in dims]
        self.post = [torch.empty(rows, o, dtype=bf) for o, i in dims]
        self.fill = 0
        self.wp = [torch.empty(o, i, dtype=bf) for o, i in dims[:2]]
        n1, n0 = dims[0]; n2 = dims[1][0]
        self.D2 = torch.empty(B, n2); self.Pc2 = torch.empty(B, n2); self.sq2 = torch.empty(n2)
        self.D1 = torch.empty(B, n1); self.Pc1 = torch.empty(B, n1); self.sq1 = torch.empty(n1)
        self.D0 = torch.empty(B, n0); self.Pc0 = torch.empty(B, n0); self.sq0 = torch.empty(n0)
        self.a1b = torch.empty(B, n1, dtype=bf); self.xb = torch.empty(B, n0, dtype=bf)
        self.z2 = torch.empty(B, n2, dtype=bf); self.r2 = torch.empty(B, n2, dtype=bf); self.bk2 = torch.empty(B, n1, dtype=bf)
        self.z1 = torch.empty(B, n1, dtype=bf); self.r1 = torch.empty(B, n1, dtype=bf); self.bk1 = torch.empty(B, n0, dtype=bf)
        self.onehot = torch.zeros(B, 10)

    def _scale(self, k, sq):
        if K.scale(p(self.scale[k]), p(sq), self.scale[k].numel(), self.eps, self.B, 1e-4, p(self.div[k])):
            # fold (as LazyOja): add this layer's pending rows, zero them, move the scale into acc
            if self.fill:
                self.acc[k].add_(self.post[k][:self.fill].t() @ self.pre[k][:self.fill])
                self.post[k][:self.fill].zero_()
            self.acc[k].mul_(self.div[k].view(-1, 1))
            self.scale[k].fill_(1.0)
            self.div[k].fill_(self.B / self.eps)

    def row(self, t):  # pointer to row `fill` of buffer t
        return ctypes.c_void_p(t.data_ptr() + self.fill * t.shape[1] * 2)

    @torch.no_grad()
    def after_backward(self, ctx):
        x, a1, a2 = ctx.inputs[1].detach(), ctx.inputs[3].detach(), ctx.inputs[5].detach()  # Flatten,L1,ReLU,L2,ReLU,L3
        y = ctx.y; B = self.B
        W1, W2, W3 = (l.weight.detach() for l in self.lin)
        self._positive_first(W1); K.pos_bf16(p(W2), W2.numel(), p(self.wp[1]))
        K.top(p(a2), p(W3), p(y), B, a2.shape[1], p(self.D2))
        K.norm(p(self.D2), B, self.D2.shape[1], p(self.Pc2), self.row(self.pre[2]), p(self.sq2))
        # L3 Oja: post = one-hot
        oh = self.onehot.zero_().scatter_(1, y.view(-1, 1), 1.0)
        self._scale(2, oh.sum(0)); K.post(p(oh), p(self.div[2]), B, 10, self.row(self.post[2]))
        self._scale(1, self.sq2); K.post(p(self.Pc2), p(self.div[1]), B, self.Pc2.shape[1], self.row(self.post[1]))
        # layer 2, then layer 1: EB with the positive weights, then the maps
        self._eb(a1, self.a1b, self.wp[1], self.z2, self.r2, self.bk2, self.D2, self.D1)
        K.norm(p(self.D1), B, self.D1.shape[1], p(self.Pc1), self.row(self.pre[1]), p(self.sq1))
        self._scale(0, self.sq1)
        self._first_layer(x)
        self.fill += B
        if self.fill == self.rows:
            for k in self._buffered:
                self.acc[k].add_(self.post[k].t() @ self.pre[k])
            self.fill = 0

    _buffered = (0, 1, 2)

    def _positive_first(self, W1):
        K.pos_bf16(p(W1), W1.numel(), p(self.wp[0]))

    def _first_layer(self, x):
        B = self.B
        K.post(p(self.Pc1), p(self.div[0]), B, self.Pc1.shape[1], self.row(self.post[0]))
        self._eb(x, self.xb, self.wp[0], self.z1, self.r1, self.bk1, self.D1, self.D0)
        K.norm(p(self.D0), B, self.D0.shape[1], p(self.Pc0), self.row(self.pre[0]), p(self.sq0))

    @staticmethod
    def _eb(a, a_low, wp, z, ratio, back, signal, out):
        """``out = a * ((signal / (a W+^T)) W+)`` with the two products in bfloat16."""
        K.cvt_bf16(p(a), a.numel(), p(a_low))
        torch.mm(a_low, wp.t(), out=z)
        K.ratio(p(signal), p(z), signal.numel(), p(ratio))
        torch.mm(ratio, wp, out=back)
        K.back(p(back), p(a), a.numel(), p(out))

    def gamma(self, k):
        out = self.acc[k].clone()
        if self.fill:
            out.add_(self.post[k][:self.fill].t() @ self.pre[k][:self.fill])
        return out.mul_(self.scale[k].view(-1, 1))


class SparseFirstLayer(FusedASP):
    """FusedASP with the first layer computed over the input's non-zero pixels only (exact).

    ``W1+`` is kept transposed (one contiguous row per pixel); ``Z``, the signal sent back and
    the Hebbian term visit only the pixels that are not 0, and the first layer's importance is
    accumulated at every step into a transposed accumulator (no row buffer).
    """

    _buffered = (1, 2)

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        out, inp = self.acc[0].shape
        self.wpT = torch.empty(inp, out, dtype=bf)
        self.accT = torch.zeros(inp, out)
        self.z1f = torch.empty(self.B, out)
        self.r1f = torch.empty(self.B, out)
        self.post1 = torch.empty(self.B, out)
        self.tmp = torch.empty(out)
        self.scratch_rows = torch.empty(self.B, inp, dtype=bf)

    def _scale(self, k, sq):
        if k != 0:
            return super()._scale(k, sq)
        if K.scale(p(self.scale[0]), p(sq), self.scale[0].numel(), self.eps, self.B, 1e-4, p(self.div[0])):
            self.accT.mul_(self.div[0].view(1, -1))
            self.scale[0].fill_(1.0)
            self.div[0].fill_(self.B / self.eps)

    def _positive_first(self, W1):
        K.pos_T(p(W1), W1.shape[0], W1.shape[1], p(self.wpT))

    def _first_layer(self, x):
        B, (out, inp) = self.B, self.acc[0].shape
        K.post_f32(p(self.Pc1), p(self.div[0]), B, out, p(self.post1))
        K.z_sparse(p(x), p(self.wpT), B, inp, out, p(self.z1f))
        K.ratio_f32(p(self.D1), p(self.z1f), self.D1.numel(), p(self.r1f))
        K.back_sparse(p(x), p(self.r1f), p(self.wpT), B, inp, out, p(self.D0))
        K.norm(p(self.D0), B, inp, p(self.Pc0), p(self.scratch_rows), p(self.sq0))
        K.hebb_T(p(self.Pc0), p(self.post1), B, inp, out, p(self.accT), p(self.tmp))

    def gamma(self, k):
        if k == 0:
            return self.accT.t().mul(self.scale[0].view(-1, 1))
        return super().gamma(k)


def main() -> None:
    global K
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--rounds", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    K = _load()
    ds = torchvision.datasets.MNIST(args.data_dir, train=True, download=False)
    X = ds.data[:6400].float().div(255).view(-1, 1, 28, 28)
    Y = ds.targets[:6400]
    batches = [(X[i:i + 100], Y[i:i + 100]) for i in range(0, 6400, 100)]

    def make(strategy: str, seed: int = 0) -> OnlineLearner:
        torch.manual_seed(seed)
        return OnlineLearner(mlp(784, [400, 400], 10), strategy=strategy, device="cpu", lam=1.0)

    variants = {"asp, fused C": FusedASP, "asp, fused C + sparse input": SparseFirstLayer}
    # the same rule: importance after 50 steps from the same start
    for label, cls in variants.items():
        ref, fused = make("asp", 1), make("asp", 1)
        fz = cls(fused.model)
        fused._strategy.after_backward = fz.after_backward
        for i in range(50):
            ref.observe(*batches[i % 64])
            fused.observe(*batches[i % 64])
        diffs = []
        for k, name in enumerate(ref._strategy._names):
            g1, g2 = ref._strategy._oja[name].gamma(), fz.gamma(k)
            diffs.append(f"{name} {float((g1 - g2).abs().sum() / g1.abs().sum()):.1e}")
        print(f"{label}: relative L1 difference of the importance from ASP's: {', '.join(diffs)}")

    def make_timed(name: str) -> OnlineLearner:
        learner = make("vanilla" if name == "vanilla" else "asp")
        if name in variants:
            learner._strategy.after_backward = variants[name](learner.model).after_backward
        return learner

    # the step-cost benchmark's own interleaved timing (16-step blocks, anchored, hook time)
    res = measure_step_cost(make_timed, ["asp", *variants], batches, repeats=args.rounds)["strategies"]
    for name, v in res.items():
        print(f"{name:28s} {1e3 * v['median_s']:.3f} ms per step  x{v['ratio_to_vanilla']:.3f}  "
              f"in the hook {1e3 * v['after_backward_median_s']:.3f} ms")

if __name__ == "__main__":
    main()
