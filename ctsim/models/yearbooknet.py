"""YearbookNet: the small CNN of Wild-Time's and Modyn's Yearbook experiments."""

from __future__ import annotations

import torch
from torch import nn

from ctsim.models.conv import conv_blocks
from ctsim.validation import ConfigError, check, positive_int


class YearbookNet(nn.Module):
    """``blocks`` × [conv 3×3 (``channels``), BatchNorm, ReLU, max-pool 2], global mean pool, linear.

    With the defaults on 1×32×32 inputs it has 28,386 parameters (Wild-Time's ``YearbookNetwork``).

    >>> net = YearbookNet((1, 32, 32), num_classes=2)
    >>> sum(p.numel() for p in net.parameters()), tuple(net(torch.zeros(5, 1, 32, 32)).shape)
    (28386, (5, 2))
    """

    input_kind = "values"  # what its rows must hold (ctsim.app.build checks it against the dataset)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 32, blocks: int = 4):
        super().__init__()
        ConfigError.raise_all(
            [
                positive_int("channels", channels),
                positive_int("blocks", blocks),
                check(
                    "input_shape",
                    tuple(input_shape),
                    len(input_shape) == 3 and min(input_shape[1:]) >= 2**blocks,
                    f"(channels, height, width) images of at least {2**blocks}×{2**blocks} pixels, "
                    f"as {blocks} max-pool blocks halve them",
                ),
            ]
        )
        self.features = conv_blocks(input_shape[0], channels, blocks, batch_norm=True)
        self.head = nn.Linear(channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head classifies (for embedding-based policies)."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
