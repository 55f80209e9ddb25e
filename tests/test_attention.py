"""c-EB and EB: hand-worked numbers, probability maps, conv/pool layers."""

import pytest
import torch
from torch import nn

from asp_service.learning import cnn, contrastive_excitation_backprop, excitation_backprop, mlp
from asp_service.learning import attention as A


def tiny_net() -> nn.Sequential:
    """3 inputs -> 2 ReLU units -> 2 outputs, weights chosen so every number can be done by hand."""
    net = mlp(3, [2], 2)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]]))
        net[1].bias.zero_()
        net[3].weight.copy_(torch.tensor([[1.0, 0.5], [-1.0, 1.0]]))
        net[3].bias.copy_(torch.tensor([5.0, -5.0]))  # biases are ignored by EB
    return net


def test_ceb_matches_hand_worked_numbers():
    """When x = (1, 2, 1): a1 = (2, 4). Target 0: W+ row (1, .5), Z = 4, P1 = (.5, .5); the
    negated row is all zero, so D1 = (.5, .5); D1 / Z1 = (.25, .125) gives D0 = (.25, .5, .25).
    Target 1: P1+ = (0, 1), P1- = (1, 0), D1 = (-1, 1), D1 / Z1 = (-.5, .25), D0 = (-.5, 0, .5)."""
    net = tiny_net()
    x = torch.tensor([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
    pc0, pc1, pc2 = contrastive_excitation_backprop(net, x, torch.tensor([0, 1]))
    torch.testing.assert_close(pc0, torch.tensor([[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(pc1, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    torch.testing.assert_close(pc2, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_plain_eb_matches_hand_worked_numbers_and_differs_from_contrastive():
    """Plain EB for target 1: P1 = (0, 1), P1 / Z1 = (0, .25), P0 = (0, .5, .5); c-EB gave (0, 0, 1)."""
    net = tiny_net()
    x = torch.tensor([[1.0, 2.0, 1.0]])
    p0, p1, _ = excitation_backprop(net, x, torch.tensor([1]))
    torch.testing.assert_close(p0, torch.tensor([[0.0, 0.5, 0.5]]))
    torch.testing.assert_close(p1, torch.tensor([[0.0, 1.0]]))
    c0 = contrastive_excitation_backprop(net, x, torch.tensor([1]))[0]
    assert not torch.allclose(c0, p0)


@pytest.mark.parametrize("build", [lambda: mlp(784, [64, 32], 10), lambda: cnn()], ids=["mlp", "cnn"])
@pytest.mark.parametrize("fn", [contrastive_excitation_backprop, excitation_backprop], ids=["ceb", "eb"])
def test_every_map_is_a_probability_distribution(build, fn):
    torch.manual_seed(0)
    net = build()
    x = torch.rand(8, 1, 28, 28)
    maps = fn(net, x, torch.randint(0, 10, (8,)))
    for m in maps:
        assert (m >= 0).all()
        sums = m.flatten(1).sum(1)
        assert torch.all(((sums - 1).abs() < 1e-4) | (sums == 0)), sums
    assert maps[0].shape == x.shape
    assert all(m.flatten(1).sum(1).gt(0.5).any() for m in maps)  # not all empty


def test_contrastive_map_differs_from_plain_eb_on_a_trained_shape():
    torch.manual_seed(1)
    net = mlp(784, [64], 10)
    x = torch.rand(4, 1, 28, 28)
    t = torch.tensor([0, 1, 2, 3])
    c = contrastive_excitation_backprop(net, x, t)[0]
    p = excitation_backprop(net, x, t)[0]
    assert (c - p).abs().sum() > 0.1


def test_conv_maps_have_the_layer_shapes():
    torch.manual_seed(0)
    net = cnn()
    maps = contrastive_excitation_backprop(net, torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3]))
    assert [tuple(m.shape) for m in maps] == [(3, 1, 28, 28), (3, 16, 28, 28), (3, 32, 14, 14), (3, 10)]


def test_max_pool_routes_to_the_winner_and_avg_pool_divides_evenly():
    a = torch.tensor([[[[1.0, 3.0], [2.0, 0.5]]]])
    sig = torch.tensor([[[[1.0]]]])
    routed = A._eb_pool(nn.MaxPool2d(2), a, sig)
    torch.testing.assert_close(routed, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))
    even = A._eb_pool(nn.AvgPool2d(2), a, sig)
    torch.testing.assert_close(even, torch.full((1, 1, 2, 2), 0.25))


def test_negative_inputs_are_shifted_for_the_attention_pass_only():
    """x = (-.5, 2, 1): the forward pass gives a1 = (.5, 4); target 0: D1 = (.2, .8). The
    attention pass uses a0 = x - min(x) = (0, 2.5, 1.5): Z1 = (1.25, 5.5), D1 / Z1 = (.16, .8/5.5),
    D0 = a0 * (.16, .2255, .2909) = (0, 31/55, 24/55). Unshifted it would be (0, 2/3, 1/3)."""
    net = tiny_net()
    pc0 = contrastive_excitation_backprop(net, torch.tensor([[-0.5, 2.0, 1.0]]), torch.tensor([0]))[0]
    torch.testing.assert_close(pc0, torch.tensor([[0.0, 31 / 55, 24 / 55]]))


def test_model_mode_and_flags_untouched():
    torch.manual_seed(0)
    net = mlp(10, [8], 3)
    net.train()
    flags = [p.requires_grad for p in net.parameters()]
    m = contrastive_excitation_backprop(net, torch.randn(4, 10), torch.tensor([0, 1, 2, 0]))[0]
    assert (m >= 0).all() and net.training and flags == [p.requires_grad for p in net.parameters()]


def test_unsupported_models_and_bad_targets_raise():
    with pytest.raises(TypeError):
        contrastive_excitation_backprop(nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)), torch.rand(1, 3), torch.tensor([0]))
    with pytest.raises(TypeError):
        contrastive_excitation_backprop(nn.Linear(3, 2), torch.rand(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError):
        contrastive_excitation_backprop(mlp(3, [2], 2), torch.rand(1, 3), torch.tensor([5]))


def test_max_normalisation_option():
    torch.manual_seed(0)
    maps = contrastive_excitation_backprop(mlp(20, [10], 3), torch.rand(4, 20), torch.tensor([0, 1, 2, 0]), normalize="max")
    for m in maps:
        mx = m.flatten(1).amax(1)
        assert torch.all(((mx - 1).abs() < 1e-5) | (mx == 0))


@pytest.mark.parametrize("build", [lambda: mlp(784, [64, 32], 10), lambda: cnn()], ids=["mlp", "cnn"])
def test_bfloat16_products_stay_close_to_float32(build):
    """compute_dtype=bfloat16 (ASP's ``precision`` option) rounds the products, not the rule: the
    maps stay probability distributions within about a percent of the float32 ones."""
    torch.manual_seed(0)
    net = build()
    layers = A.sequential_layers(net)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with torch.no_grad():
        _, inputs = A.forward_with_inputs(layers, x)
    exact = A.attention_from_inputs(layers, inputs, y)
    low = A.attention_from_inputs(layers, inputs, y, compute_dtype=torch.bfloat16, workspace={})
    for e, m in zip(exact, low):
        assert m.dtype == torch.float32 and m.shape == e.shape
        torch.testing.assert_close(m.flatten(1).sum(1), e.flatten(1).sum(1), atol=1e-5, rtol=0)
        assert float((m - e).abs().sum() / e.abs().sum()) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_positive_weights_equal_max_w_0_in_every_dtype(dtype):
    """The 16-bit buffers are clamped through their int16 bits: the same values as max(W, 0),
    with -0.0 and the smallest negatives going to +0.0, and reused across calls."""
    w = torch.tensor([[-0.0, 0.0, -1e-30, 1e-30], [-3.5, 2.25, float("-inf"), 7.0]])
    ws: dict = {}
    first = A._positive(w, ws, "k", dtype)
    assert torch.equal(first, w.clamp(min=0).to(dtype))
    assert dtype == torch.float32 or not torch.signbit(first).any()
    w2 = -w
    assert A._positive(w2, ws, "k", dtype) is first  # the workspace buffer is reused
    assert torch.equal(first, w2.clamp(min=0).to(dtype))
