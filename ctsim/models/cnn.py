"""CNN: a small convolutional network with dropout, batch-trainable with per-model masks."""

from __future__ import annotations

import torch
from torch import nn

from ctsim.models.conv import conv_blocks
from ctsim.models.dropout import SeededDropout
from ctsim.validation import ConfigError, check, positive_int


class CNN(nn.Module):
    """``blocks`` × [conv 3×3, ReLU, max-pool 2, dropout], global mean pool, linear → ReLU → dropout → linear.

    Dropout masks are per model (:class:`~ctsim.models.dropout.SeededDropout`), so the batched engine
    trains it exactly as the sequential one: the case earlier vmap libraries got wrong.

    >>> torch.manual_seed(0) and None
    >>> net = CNN((1, 32, 32), num_classes=2)
    >>> sum(p.numel() for p in net.parameters()), tuple(net(torch.zeros(4, 1, 32, 32)).shape)
    (21058, (4, 2))
    """

    input_kind = "values"  # what its rows must hold (ctsim.app.build checks it against the dataset)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: int = 32,
        blocks: int = 3,
        hidden: int = 64,
        dropout: float = 0.25,
    ):
        super().__init__()
        ConfigError.raise_all(
            [
                positive_int("channels", channels),
                positive_int("blocks", blocks),
                positive_int("hidden", hidden),
                check(
                    "input_shape",
                    tuple(input_shape),
                    len(input_shape) == 3 and min(input_shape[1:]) >= 2**blocks,
                    f"(channels, height, width) images of at least {2**blocks}×{2**blocks} pixels",
                ),
            ]
        )
        self.features = conv_blocks(input_shape[0], channels, blocks, dropout=dropout)
        self.hidden = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), SeededDropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
