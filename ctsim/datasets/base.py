"""What a dataset hands to ctsim: every sample as tensors, plus the drift it knows about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class ChangePoint:
    """Ground truth of one designed change: where it is, whether abrupt or gradual, what changed.

    ``slice`` is where it starts; a gradual change ends at ``end_slice``.
    """

    slice: int
    kind: Literal["abrupt", "gradual"]
    what: str
    end_slice: int | None = None


@dataclass(frozen=True)
class Samples:
    """All samples of a dataset, in any order. A sample's key is its row.

    ``time`` is a float timestamp (e.g. fractional years) that orders arrival; ``slice`` is the index
    of the contiguous time period the sample belongs to, labelled by ``slice_labels``.
    """

    x: torch.Tensor
    y: torch.Tensor
    time: torch.Tensor
    slice: torch.Tensor
    slice_labels: list[str]
    num_classes: int
    change_points: list[ChangePoint]


class Dataset(Protocol):
    """A time-ordered dataset: its shapes are known before :meth:`load` does any work."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int

    def load(self) -> Samples: ...
