"""A model of your own: an MLP whose hidden layers add their input back (residual blocks).

Run it from this folder (``_target_: my_model.ResidualMLP`` in ``conf/model/my_model.yaml``)::

    python -m ctsim --config-dir conf dataset=sea model=my_model
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ctsim.validation import ConfigError, check, is_int, is_number


class ResidualMLP(nn.Module):
    """Flatten, project to ``width``, then ``blocks`` residual blocks ``h + Linear(ReLU(h))``, then a head.

    The constructor takes ``input_shape`` and ``num_classes`` first: ctsim fills them in from the
    dataset. ``embed`` gives the penultimate layer and ``head`` reads it, so drift triggers and
    the grad_norm downsampling score can ask this model for its embeddings. The plain ``nn.Dropout`` becomes
    seeded per model when ctsim builds it, so the batched engine equals training each model alone.

    Args:
        width: the width of every hidden layer.
        blocks: the number of residual blocks.
        dropout: the dropout probability inside each block, in [0, 1).

    >>> net = ResidualMLP((3,), num_classes=2, width=8, blocks=2)
    >>> tuple(net(torch.zeros(5, 3)).shape), tuple(net.embed(torch.zeros(5, 3)).shape)
    ((5, 2), (5, 8))
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        blocks: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        ConfigError.raise_all(
            [
                check("width", width, is_int(width) and width >= 1, "an integer ≥ 1"),
                check("blocks", blocks, is_int(blocks) and blocks >= 0, "an integer ≥ 0"),
                check("dropout", dropout, is_number(dropout) and 0 <= dropout < 1, "a number in [0, 1)"),
            ]
        )
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width)) for _ in range(blocks)
        )
        self.head = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return torch.relu(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
