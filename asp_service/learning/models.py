"""Reference architectures that attention and importance understand.

Attention (c-EB) walks a plain chain of layers, so the models here are ``nn.Sequential`` of
Flatten, Linear, Conv2d, ReLU, MaxPool2d and AvgPool2d. Any such chain works; these two are the
paper's MLP and a small CNN.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_features: int = 784, hidden: Sequence[int] = (400, 400), out_features: int = 10) -> nn.Sequential:
    """The paper's multilayer perceptron: Flatten, then Linear+ReLU per hidden width, then a linear head.

    >>> mlp(784, [400, 400], 10)[1]
    Linear(in_features=784, out_features=400, bias=True)
    """
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError("layer widths must be positive")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def cnn(in_channels: int = 1, out_features: int = 10, image_size: int = 28) -> nn.Sequential:
    """A small LeNet-like CNN: conv-relu-maxpool, conv-relu-avgpool, linear head."""
    if image_size % 4:
        raise ValueError("image_size must be divisible by 4")
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, out_features),
    )
