"""MLP: a multilayer perceptron on flattened inputs."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ctsim.validation import ConfigError, check, is_int


class MLP(nn.Module):
    """Flatten, then ``Linear → ReLU`` per entry of ``hidden``, then a linear head.

    >>> net = MLP((1, 4, 4), num_classes=3, hidden=[8])
    >>> sum(p.numel() for p in net.parameters()), tuple(net(torch.zeros(2, 1, 4, 4)).shape)
    (163, (2, 3))
    """

    input_kind = "values"  # what its rows must hold (ctsim.app.build checks it against the dataset)

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int] | tuple[int, ...] = (128,)
    ):
        super().__init__()
        ConfigError.raise_all(
            [
                check(
                    "hidden",
                    hidden,
                    isinstance(hidden, (list, tuple)) and all(is_int(h) and h >= 1 for h in hidden),
                    "a list of integers ≥ 1, e.g. [128]",
                )
            ]
        )
        hidden = list(hidden)
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
