"""The convolutional feature stack that YearbookNet and CNN share."""

from __future__ import annotations

from torch import nn

from ctsim.models.dropout import SeededDropout


def conv_blocks(
    in_channels: int, channels: int, blocks: int, batch_norm: bool = False, dropout: float | None = None
) -> nn.Sequential:
    """``blocks`` × [conv 3×3 (``channels``), BatchNorm if ``batch_norm``, ReLU, max-pool 2, seeded dropout].

    ``dropout`` is the dropout probability; None leaves dropout out.

    The layers are built, and so initialised from torch's global RNG, in that order: a model's parameter
    names (``0.weight``, ``1.weight``, ...) and seeded initial weights follow from it.

    >>> [type(m).__name__ for m in conv_blocks(1, 8, 2, batch_norm=True)]
    ['Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d', 'Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d']
    >>> [type(m).__name__ for m in conv_blocks(3, 8, 1, dropout=0.25)]
    ['Conv2d', 'ReLU', 'MaxPool2d', 'SeededDropout']
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for _ in range(blocks):
        layers.append(nn.Conv2d(c_in, channels, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        if dropout is not None:
            layers.append(SeededDropout(dropout))
        c_in = channels
    return nn.Sequential(*layers)
