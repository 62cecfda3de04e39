"""What a dataset hands to ctsim: every sample as tensors, plus the drift it knows about."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

log = logging.getLogger(__name__)


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


def cached_tensors(
    path: Path, generate: Callable[[], dict[str, torch.Tensor]], cache: bool
) -> dict[str, torch.Tensor]:
    """``generate()``'s tensors, read from ``path`` when ``cache`` is on and the file exists.

    A generated result is written to ``path`` (when ``cache`` is on) through a temporary file and an
    atomic rename, so a concurrent reader (another process of a multirun) never sees half a file.
    A cache file that cannot be read (truncated, corrupt) is regenerated and replaced, with a warning.
    """
    if cache and path.exists():
        try:
            return torch.load(path, weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            log.warning("cannot read the cache %s (%s): generating it again", path, err)
    data = generate()
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        tmp.replace(path)
        log.info("cached %s", path)
    return data
