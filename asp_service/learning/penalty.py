r"""The one consolidation penalty every strategy plugs into (Kolouri et al. 2019, Eq. 1).

.. math::

    \mathcal{L} = \mathcal{L}_{task} + \lambda \sum_k \Gamma_k (\theta_k - \bar\theta_k)^2,
    \qquad \nabla = 2 \lambda \Gamma (\theta - \bar\theta)

Strategies differ only in the importance :math:`\gamma` they hand over when an anchor is taken;
this class turns the anchors into :math:`(\Gamma, \bar\theta)`. Two forms:

``"weighted"`` (EWC's form: one quadratic per anchor). A sum of quadratics is one quadratic,

.. math::

    \sum_t \gamma_t (\theta - \theta^*_t)^2 = \Gamma (\theta - \bar\theta)^2 + \text{const},
    \quad \Gamma = \sum_t \gamma_t,\ \bar\theta = \frac{\sum_t \gamma_t \theta^*_t}{\Gamma},

so every anchor ever taken is kept exactly in constant memory: a task-free service can re-anchor
forever. ``decay`` < 1 discounts older anchors (:math:`\Gamma \leftarrow d\,\Gamma + \gamma`).

``"latest"`` (online EWC, SI): the accumulated importance :math:`\Gamma \leftarrow d\,\Gamma + \gamma`
pulls towards the most recent anchor only, :math:`\bar\theta = \theta^*_{latest}`.

The penalty is zero until the first anchor exists (an anchor at the random initialisation would
pull the first task back to noise). Its gradient is written to ``.grad`` directly, not by autograd.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

ANCHOR_FORMS = ("weighted", "latest")


class Consolidation:
    """Quadratic consolidation penalty over named parameters.

    Parameters
    ----------
    params:
        Named parameters (``dict(model.named_parameters())``); importance may cover a subset.
    lam:
        Strength :math:`\\lambda`.
    form:
        ``"weighted"`` or ``"latest"`` (see the module docstring).
    decay:
        Discount of the importance already consolidated, applied at each new anchor.
    """

    def __init__(self, params: Mapping[str, Tensor], *, lam: float, form: str = "weighted", decay: float = 1.0):
        if lam < 0:
            raise ValueError("lam must be >= 0")
        if form not in ANCHOR_FORMS:
            raise ValueError(f"form must be one of {ANCHOR_FORMS}, got {form!r}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError("decay must lie in [0, 1]")
        self.lam = float(lam)
        self.form = form
        self.decay = float(decay)
        self._params = dict(params)
        self._reset()

    def _reset(self) -> None:
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.anchors_taken = 0
        self._terms: dict[str, tuple[Tensor, Tensor]] = {}
        self._terms_lam: float | None = None  # lam the terms were built with; None: rebuild
        self._stats: dict[str, dict[str, float]] | None = None

    @property
    def active(self) -> bool:
        return self.lam > 0 and bool(self.importance)

    @torch.no_grad()
    def consolidate(self, gamma: Mapping[str, Tensor] | None) -> None:
        """Take an anchor at the current parameters with the importance ``gamma`` (name -> tensor)."""
        self.anchors_taken += 1
        self._stats = None
        self._terms_lam = None
        if not gamma:
            return
        for name, g in gamma.items():
            theta = self._params[name].detach()
            g = g.detach().to(theta).contiguous()
            if name not in self.importance:
                self.importance[name] = g.clone()
                self.anchor[name] = theta.clone()
                continue
            old = self.importance[name].mul_(self.decay)
            if self.form == "latest":
                old.add_(g)
                self.anchor[name].copy_(theta)
            else:
                total = old + g
                mixed = torch.where(total > 0, (old * self.anchor[name] + g * theta) / total.clamp(min=1e-30), theta)
                self.anchor[name].copy_(mixed)
                self.importance[name] = total

    def penalty(self) -> Tensor:
        """The penalty as a differentiable tensor (for tests and autograd; training uses set_gradient)."""
        total = torch.zeros(())
        for name, g in self.importance.items():
            p = self._params[name]
            total = total.to(p.device) + (g * (p - self.anchor[name]).pow(2)).sum()
        return self.lam * total

    def _gradient_terms(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per parameter ``(c, n)`` with ``c = 2 lam Gamma`` and ``n = -c theta_bar``, so that the
        gradient ``c theta + n`` takes one pass that reads two stored tensors. Rebuilt after an
        anchor, a restore, or a change of ``lam``. Against ``c (theta - theta_bar)`` this rounds
        ``c theta`` before the difference (an error of about 6e-8 of ``c |theta|``, exactly 0 at
        the anchor), far below the task gradient's own noise."""
        if self._terms_lam != self.lam:
            self._terms = {}
            for name, g in self.importance.items():
                c = g.mul(2.0 * self.lam)
                self._terms[name] = (c, c.mul(self.anchor[name]).neg_())
            self._terms_lam = self.lam
        return self._terms

    @torch.no_grad()
    def set_gradient(self) -> set[str]:
        """Overwrite ``.grad`` of each penalised parameter with ``2 lam Gamma (theta - theta_bar)``.

        The training step calls this instead of zeroing those gradients before ``backward()``,
        which then accumulates the task gradient on top: one pass over each parameter (as
        ``c theta + n``, see :meth:`_gradient_terms`) and no scratch buffer. Returns the names
        written (none while no anchor exists); the caller zeroes the other gradients.
        """
        if not self.active:
            return set()
        for name, (c, n) in self._gradient_terms().items():
            p = self._params[name]
            if p.grad is None:
                p.grad = torch.empty_like(p, memory_format=torch.contiguous_format)
            torch.addcmul(n, c, p.detach(), out=p.grad)
        return set(self._terms)

    @torch.no_grad()
    def add_gradient(self, with_value: bool = True) -> Tensor | None:
        """Add ``2 lam Gamma (theta - theta_bar)`` to each parameter's ``.grad``; return the penalty value.

        For training loops of one's own (the learner uses :meth:`set_gradient`). Returns ``None``
        (and does nothing) while no anchor exists, and ``None`` after adding the gradient when
        ``with_value`` is false.
        """
        if not self.active:
            return None
        for name, (c, n) in self._gradient_terms().items():
            p = self._params[name]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(torch.addcmul(n, c, p.detach()))
        return self.value() if with_value else None

    @torch.no_grad()
    def value(self) -> Tensor | None:
        """The penalty's value ``lam * sum Gamma (theta - theta_bar)^2`` (``None`` while no anchor exists)."""
        if not self.active:
            return None
        total = None
        for name, g in self.importance.items():
            d = self._params[name].detach() - self.anchor[name]
            term = torch.dot(d.mul_(d).view(-1), g.reshape(-1))
            total = term if total is None else total + term
        return self.lam * total

    def state_dict(self) -> dict:
        return {
            "importance": {k: v.clone() for k, v in self.importance.items()},
            "anchor": {k: v.clone() for k, v in self.anchor.items()},
            "anchors_taken": self.anchors_taken,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self._reset()
        for name, g in state["importance"].items():
            p = self._params[name]
            self.importance[name] = g.detach().clone().to(p)
            self.anchor[name] = state["anchor"][name].detach().clone().to(p)
        self.anchors_taken = int(state["anchors_taken"])

    def stats(self) -> dict[str, dict[str, float]]:
        """Per-parameter statistics of the consolidated importance Gamma (kept until the next anchor)."""
        if self._stats is None:
            self._stats = {
                name: {"mean": float(g.mean()), "max": float(g.max()), "nonzero_frac": float((g > 0).float().mean())}
                for name, g in self.importance.items()
            }
        return {name: dict(s) for name, s in self._stats.items()}
