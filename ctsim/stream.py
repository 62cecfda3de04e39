"""The stream: a dataset's samples split per slice into a train pool and a held-out test set, with
the train pool arriving in time order, in arrival batches.

* Each slice's samples are split ``1 - test_fraction`` / ``test_fraction`` (default 90/10) at random
  with a fixed ``split_seed``, as Wild-Time does. The split does not depend on the pipelines' seeds.
  A dataset that brings its own split (``Samples.is_test``, e.g. Wild-Time's Yearbook pickle) keeps it.
* The train pool arrives sorted by timestamp. An arrival batch is ``arrival_batch`` samples, or the
  whole slice (``"slice"``, the default). Batches never straddle slices: the last batch of a slice
  may be smaller. Triggers decide once per arrival batch.

Example:
    >>> stream = toy_stream([4, 6], arrival_batch=3)
    >>> [(b.slice, b.keys.tolist(), b.end_of_slice) for b in stream.batches]
    [(0, [0, 1, 2], False), (0, [3], True), (1, [4, 5, 6], False), (1, [7, 8, 9], True)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import torch

from ctsim.datasets.base import ChangePoint, Samples
from ctsim.validation import ConfigError, check, is_int, is_number, seed_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrivalBatch:
    """One unit of arriving training data.

    ``keys`` are sample keys (rows) in arrival order; ``start:stop`` is their position in
    :attr:`Stream.arrival_order`. ``end_of_slice`` marks the batch that completes its slice.
    """

    index: int
    slice: int
    start: int
    stop: int
    keys: torch.Tensor
    end_of_slice: bool

    def __len__(self) -> int:
        return self.stop - self.start


class StreamSpec:
    """How to turn samples into a stream (the ``stream`` config node).

    Args:
        arrival_batch: samples per arrival batch, or ``"slice"`` for one batch per slice.
        test_fraction: share of each slice held out for evaluation, in [0, 1).
        split_seed: seed of the train/test split, fixed across pipelines and seeds.
    """

    def __init__(self, arrival_batch: int | str = "slice", test_fraction: float = 0.1, split_seed: int = 0):
        ConfigError.raise_all(
            [
                check(
                    "arrival_batch",
                    arrival_batch,
                    arrival_batch == "slice" or (is_int(arrival_batch) and arrival_batch >= 1),
                    "'slice' or an integer ≥ 1",
                ),
                check(
                    "test_fraction",
                    test_fraction,
                    is_number(test_fraction) and 0 <= test_fraction < 1,
                    "a number in [0, 1)",
                ),
                seed_problem("split_seed", split_seed),
            ]
        )
        self.arrival_batch = arrival_batch
        self.test_fraction = float(test_fraction)
        self.split_seed = split_seed

    def build(self, samples: Samples) -> Stream:
        return Stream(samples, self.arrival_batch, self.test_fraction, self.split_seed)


class Stream:
    """All samples as tensors, split and ordered for replay (see the module docstring)."""

    def __init__(
        self,
        samples: Samples,
        arrival_batch: int | str = "slice",
        test_fraction: float = 0.1,
        split_seed: int = 0,
    ):
        self.x, self.y, self.time, self.slice = samples.x, samples.y, samples.time, samples.slice
        self.slice_labels: list[str] = list(samples.slice_labels)
        self.num_classes = samples.num_classes
        self.change_points: list[ChangePoint] = list(samples.change_points)
        if samples.is_test is not None:  # the dataset's own split (test_fraction and split_seed unused)
            self.is_test = samples.is_test.to(torch.bool)
            if (test_fraction, split_seed) != (0.1, 0):
                log.warning(
                    "the dataset brings its own train/test split: stream.test_fraction=%g and "
                    "stream.split_seed=%d are not used",
                    test_fraction,
                    split_seed,
                )
        else:
            self.is_test = _split(self.slice, len(self.slice_labels), test_fraction, split_seed)
        if samples.fit is not None:  # inputs fitted on training rows only (see Samples)
            self.x = samples.fit(~self.is_test)
        train = (~self.is_test).nonzero().squeeze(1)
        # Sort by (slice, time): slices are contiguous periods, so this is time order.
        order = torch.argsort(self.time[train].to(torch.float64), stable=True)
        order = order[torch.argsort(self.slice[train][order], stable=True)]
        self.arrival_order = train[order]
        self.batches = _cut_batches(self.arrival_order, self.slice[self.arrival_order], arrival_batch)

    @property
    def num_slices(self) -> int:
        return len(self.slice_labels)

    @cached_property
    def test_keys(self) -> list[torch.Tensor]:
        """The held-out test keys of every slice."""
        keys = self.is_test.nonzero().squeeze(1)
        return [keys[self.slice[keys] == s] for s in range(self.num_slices)]

    @cached_property
    def train_sizes(self) -> list[int]:
        return torch.bincount(self.slice[self.arrival_order], minlength=self.num_slices).tolist()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def _split(slice_idx: torch.Tensor, num_slices: int, test_fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    is_test = torch.zeros(len(slice_idx), dtype=torch.bool)
    for s in range(num_slices):
        keys = (slice_idx == s).nonzero().squeeze(1)
        n_test = round(test_fraction * len(keys))
        if test_fraction > 0 and len(keys) >= 2:
            n_test = min(max(n_test, 1), len(keys) - 1)  # every slice keeps a test and a train sample
        is_test[keys[torch.randperm(len(keys), generator=g)[:n_test]]] = True
    return is_test


def _cut_batches(order: torch.Tensor, slices: torch.Tensor, arrival_batch: int | str) -> list[ArrivalBatch]:
    batches: list[ArrivalBatch] = []
    values, counts = torch.unique_consecutive(slices, return_counts=True)
    start = 0
    for s, n in zip(values.tolist(), counts.tolist()):
        size = n if arrival_batch == "slice" else int(arrival_batch)
        for lo in range(start, start + n, size):
            hi = min(lo + size, start + n)
            batches.append(ArrivalBatch(len(batches), s, lo, hi, order[lo:hi], hi == start + n))
        start += n
    return batches


def toy_stream(
    slice_sizes: list[int],
    arrival_batch: int | str = "slice",
    test_fraction: float = 0.0,
    num_classes: int = 2,
    seed: int = 0,
) -> Stream:
    """A small stream of random 1×4×4 inputs with ``slice_sizes[s]`` samples in slice ``s``.

    For examples and tests: samples are keyed in time order, so with ``test_fraction=0`` the
    arrival order is ``0, 1, 2, ...``.
    """
    g = torch.Generator().manual_seed(seed)
    n = sum(slice_sizes)
    slice_idx = torch.repeat_interleave(torch.arange(len(slice_sizes)), torch.tensor(slice_sizes))
    samples = Samples(
        x=torch.rand(n, 1, 4, 4, generator=g),
        y=torch.randint(num_classes, (n,), generator=g),
        time=slice_idx.to(torch.float64) + torch.linspace(0, 0.999, n, dtype=torch.float64) % 1,
        slice=slice_idx,
        slice_labels=[f"t{s}" for s in range(len(slice_sizes))],
        num_classes=num_classes,
        change_points=[],
    )
    return Stream(samples, arrival_batch, test_fraction, seed)
