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


def test_set_gradient_overwrites_with_the_penalty_gradient_and_follows_lam():
    """The training step's form: .grad starts at 2 lam Gamma (theta - theta*), whatever it held."""
    p = _params()
    c = Consolidation(p, lam=3.0)
    assert c.set_gradient() == set()
    gamma = {"w": torch.rand(4, 3)}
    c.consolidate(gamma)
    anchor = p["w"].detach().clone()
    with torch.no_grad():
        p["w"].add_(torch.randn(4, 3))
    p["w"].grad = torch.full((4, 3), 7.0)
    assert c.set_gradient() == {"w"}
    torch.testing.assert_close(p["w"].grad, 2 * 3.0 * gamma["w"] * (p["w"].detach() - anchor))
    c.lam = 0.5  # a public hyperparameter: the cached terms must follow it
    c.set_gradient()
    torch.testing.assert_close(p["w"].grad, 2 * 0.5 * gamma["w"] * (p["w"].detach() - anchor))
    torch.testing.assert_close(c.value(), c.penalty().detach())


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


def _maps(b, n, gen, one_hot=False):
    if one_hot:
        return torch.nn.functional.one_hot(torch.randint(0, n, (b,), generator=gen), n).float()
    m = torch.rand(b, n, generator=gen).sub_(0.6).clamp_(min=0)  # sparse, like ReLU(D)
    return m / m.sum(1, keepdim=True).clamp(min=1e-12)


@pytest.mark.parametrize("one_hot", [False, True])
def test_lazy_oja_equals_the_rule_step_by_step(one_hot):
    """The factored, buffered form gives oja_update's gamma, across buffer flushes, a batch larger
    than the buffer, and (one-hot post maps: decay 1 - eps * share of a label) scale folds."""
    from asp_service.learning.importance import LazyOja

    gen = torch.Generator().manual_seed(3)
    w = torch.zeros(6, 9)
    lazy, direct = LazyOja(w, rows=40), torch.zeros(6, 9)
    folds = 0
    for step, b in enumerate([16, 16, 7, 16, 50, 16, 3] * 12):
        pre, post = _maps(b, 9, gen), _maps(b, 6, gen, one_hot)
        eps = 0.9 if one_hot else 2.0
        before = lazy.scale.clone()
        lazy.update(pre, post, eps)
        folds += int(bool((lazy.scale == 1).all()) and not bool((before == 1).all()))
        oja_update(direct, pre, post, eps)
        if step % 5 == 0:
            torch.testing.assert_close(lazy.gamma(), direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lazy.gamma(), direct, rtol=1e-5, atol=1e-7)
    assert folds > 0 if one_hot else bool((lazy.scale < 1).all())


def test_lazy_oja_conv_equals_the_conv_rule():
    from asp_service.learning.importance import LazyOja

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    lazy, direct = LazyOja(conv.weight, conv=conv), torch.zeros_like(conv.weight)
    for _ in range(5):
        pre, post = torch.rand(4, 2, 5, 5) / 50, torch.rand(4, 3, 5, 5) / 75
        lazy.update(pre, post, 1.0)
        oja_update_conv(direct, pre, post, 1.0, conv)
    torch.testing.assert_close(lazy.gamma(), direct.detach(), rtol=1e-5, atol=1e-8)


def test_lazy_oja_state_round_trip_with_pending_rows_is_bit_identical():
    from asp_service.learning.importance import LazyOja

    gen = torch.Generator().manual_seed(4)
    w = torch.zeros(5, 8)
    a = LazyOja(w, rows=64)
    for _ in range(3):
        a.update(_maps(16, 8, gen), _maps(16, 5, gen), 1.0)
    assert a.state_dict()["pending"] is not None  # 48 rows wait in the buffer
    b = LazyOja(w, rows=64)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.gamma(), b.gamma())
    for _ in range(5):
        pre, post = _maps(16, 8, gen), _maps(16, 5, gen)
        a.update(pre, post, 1.0)
        b.update(pre, post, 1.0)
    assert torch.equal(a.gamma(), b.gamma())


def test_lazy_oja_in_bfloat16_stays_close_to_float32():
    from asp_service.learning.importance import LazyOja

    gen = torch.Generator().manual_seed(5)
    w = torch.zeros(40, 60)
    exact, low = LazyOja(w), LazyOja(w, compute_dtype=torch.bfloat16)
    for _ in range(30):
        pre, post = _maps(32, 60, gen), _maps(32, 40, gen)
        exact.update(pre, post, 1.0)
        low.update(pre, post, 1.0)
    g, gl = exact.gamma(), low.gamma()
    assert gl.dtype == torch.float32
    assert float((gl - g).abs().sum() / g.abs().sum()) < 5e-3
