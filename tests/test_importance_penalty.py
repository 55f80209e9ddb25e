"""Oja's rule and the consolidation penalty."""

import pytest
import torch

from asp_service.learning import Consolidation, oja_update
from asp_service.learning.importance import oja_update_conv


def test_oja_single_sample_fixed_point():
    """With fixed maps the rule converges to gamma_ij = pre_j / post_i (where post_i > 0)."""
    pre = torch.tensor([[0.2, 0.3, 0.5]])
    post = torch.tensor([[0.25, 0.75]])
    g = torch.zeros(2, 3)
    for _ in range(3000):
        oja_update(g, pre, post, eps=1.0)
    torch.testing.assert_close(g, pre / post.t())


def test_oja_batch_is_the_mean_of_per_sample_terms():
    torch.manual_seed(0)
    pre, post = torch.rand(5, 4), torch.rand(5, 3)
    g0 = torch.rand(3, 4)
    eps = 0.3
    expected = g0 + eps * (sum(post[b, :, None] * pre[b, None, :] for b in range(5)) / 5 - (post**2).mean(0)[:, None] * g0)
    torch.testing.assert_close(oja_update(g0.clone(), pre, post, eps), expected)
    # batch fixed point: mean(post_i pre_j) / mean(post_i^2)
    g = torch.zeros(3, 4)
    for _ in range(5000):
        oja_update(g, pre, post, 1.0)
    torch.testing.assert_close(g, (post.t() @ pre / 5) / (post**2).mean(0)[:, None], rtol=1e-4, atol=1e-5)


def test_oja_conv_equals_unfolded_linear_rule():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    pre, post = torch.rand(4, 2, 5, 5), torch.rand(4, 3, 5, 5)
    g = torch.rand(3, 2, 3, 3)
    got = oja_update_conv(g.clone(), pre, post, 0.1, conv)
    cols = torch.nn.functional.unfold(pre, 3, padding=1)  # (B, 2*9, 25)
    hebb = torch.einsum("bop,bip->oi", post.flatten(2), cols).view_as(g) / 4
    decay = post.pow(2).sum((2, 3)).mean(0)
    torch.testing.assert_close(got, g + 0.1 * (hebb - decay.view(-1, 1, 1, 1) * g))


def _params():
    torch.manual_seed(0)
    return {"w": torch.nn.Parameter(torch.randn(4, 3)), "b": torch.nn.Parameter(torch.randn(4))}


def test_penalty_is_off_until_the_first_anchor():
    p = _params()
    c = Consolidation(p, lam=10.0)
    for t in p.values():
        t.grad = torch.zeros_like(t)
    assert c.add_gradient() is None and all((t.grad == 0).all() for t in p.values())


def test_penalty_gradient_is_2_lambda_gamma_delta():
    p = _params()
    c = Consolidation(p, lam=3.0)
    gamma = {"w": torch.rand(4, 3)}
    c.consolidate(gamma)
    anchor = p["w"].detach().clone()
    with torch.no_grad():
        p["w"].add_(torch.randn(4, 3))
    p["w"].grad = torch.zeros(4, 3)
    value = c.add_gradient()
    expected = 2 * 3.0 * gamma["w"] * (p["w"].detach() - anchor)
    torch.testing.assert_close(p["w"].grad, expected)
    # the same as autograd through the penalty, and the returned value is the penalty
    p["w"].grad = None
    loss = c.penalty()
    loss.backward()
    torch.testing.assert_close(p["w"].grad, expected)
    torch.testing.assert_close(value, loss.detach())


def test_weighted_form_equals_the_sum_of_per_anchor_quadratics():
    """EWC keeps one quadratic per anchor; the machine's single quadratic has the same gradient."""
    p = _params()
    c = Consolidation(p, lam=2.0, form="weighted")
    anchors, gammas = [], []
    for _ in range(3):
        with torch.no_grad():
            p["w"].add_(torch.randn(4, 3))
        g = torch.rand(4, 3)
        anchors.append(p["w"].detach().clone())
        gammas.append(g)
        c.consolidate({"w": g})
    with torch.no_grad():
        p["w"].add_(torch.randn(4, 3))
    p["w"].grad = torch.zeros(4, 3)
    c.add_gradient()
    expected = sum(2 * 2.0 * g * (p["w"].detach() - a) for g, a in zip(gammas, anchors))
    torch.testing.assert_close(p["w"].grad, expected)
    assert c.anchors_taken == 3


def test_latest_form_accumulates_with_decay_and_pulls_to_the_last_anchor():
    p = _params()
    c = Consolidation(p, lam=1.0, form="latest", decay=0.5)
    c.consolidate({"w": torch.ones(4, 3)})
    with torch.no_grad():
        p["w"].add_(1.0)
    c.consolidate({"w": torch.ones(4, 3)})
    torch.testing.assert_close(c.importance["w"], torch.full((4, 3), 1.5))
    torch.testing.assert_close(c.anchor["w"], p["w"].detach())


def test_penalty_state_round_trip():
    p = _params()
    c = Consolidation(p, lam=1.0)
    c.consolidate({"w": torch.rand(4, 3), "b": torch.rand(4)})
    d = Consolidation(p, lam=1.0)
    d.load_state_dict(c.state_dict())
    assert d.anchors_taken == 1 and all(torch.equal(c.importance[k], d.importance[k]) for k in c.importance)


@pytest.mark.parametrize("kw", [dict(lam=-1.0), dict(lam=1.0, form="x"), dict(lam=1.0, decay=2.0)])
def test_invalid_hyperparameters_raise(kw):
    with pytest.raises(ValueError):
        Consolidation(_params(), **kw)


@pytest.mark.parametrize("reduce", ["square", "abs"])
def test_per_sample_fast_path_equals_vmap(reduce):
    """The one-matmul-per-layer statistic equals the per-sample gradients of torch.func."""
    from asp_service.learning import mlp
    from asp_service.learning.strategies import persample

    torch.manual_seed(0)
    net = mlp(12, [7, 5], 3)
    x, y = torch.rand(20, 12), torch.randint(0, 3, (20,))

    def scalar(logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

    names = [n for n, _ in net.named_parameters()]
    fast = persample._linear_chain_stat(net, list(net.children()), x, y, scalar, reduce, 8)
    slow = persample._vmap_stat(net, names, x, y, scalar, reduce, 8)
    for n in names:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-4, atol=1e-6)
