"""Streams with designed changes, built in the tests (nobody tuned a default to them).

``shifted``: 8 Gaussian features; from ``change`` on, feature 3 moves by ``shift`` σ (covariate
shift; the labelling rule is unchanged). ``concept``: the same inputs, whose labelling rule turns
at ``change`` (a model trained before it loses far more than 10 points of accuracy after it).
"""

from __future__ import annotations

import torch

from ctsim.datasets.base import ChangePoint, Samples
from ctsim.stream import Stream


def _samples(slices: int, per_slice: int, change: int, seed: int, shift: float, concept: bool) -> Samples:
    g = torch.Generator().manual_seed(seed)
    n = slices * per_slice
    slice_idx = torch.arange(slices).repeat_interleave(per_slice)
    x = torch.randn(n, 8, generator=g)
    after = slice_idx >= change
    x[after, 3] += shift
    w_before = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    w_after = torch.tensor([1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]) if concept else w_before
    centred = x.clone()
    centred[after, 3] -= shift  # the rule reads the features as they were: covariate shift only
    y_before = (centred @ w_before > 0).long()
    y_after = (centred @ w_after > 0).long()
    y = torch.where(after, y_after, y_before)
    time = slice_idx.double() + torch.rand(n, generator=g, dtype=torch.float64)
    kind = "concept: the labelling rule turns" if concept else f"feature 3 shifts by {shift}σ"
    return Samples(
        x=x.view(n, 1, 2, 4),
        y=y,
        time=time,
        slice=slice_idx,
        slice_labels=[f"s{s}" for s in range(slices)],
        num_classes=2,
        change_points=[ChangePoint(change, "abrupt", kind)],
    )


def shifted(
    slices: int = 30, per_slice: int = 200, change: int = 15, seed: int = 0, shift: float = 1.5, **stream
) -> Stream:
    return Stream(_samples(slices, per_slice, change, seed, shift, concept=False), **stream)


def concept(slices: int = 30, per_slice: int = 200, change: int = 15, seed: int = 0, **stream) -> Stream:
    return Stream(_samples(slices, per_slice, change, seed, 0.0, concept=True), **stream)


def successive_frame(
    slices: int = 64,
    per_slice: int = 200,
    changes: tuple[int, ...] = (16, 32, 48),
    seed: int = 0,
    unsure: bool = False,
):
    """A table (polars frame: ``t``, ``f0`` … ``f7``, ``y``) whose concept changes at each of ``changes``.

    Regime ``r`` (after ``r`` changes) labels a row by the sign of its features ``2r`` and ``2r + 1``
    summed: each change makes the previous rule useless (chance accuracy). The inputs keep
    one distribution throughout (a change of p(y|x) alone, invisible to data drift) unless ``unsure``:
    then the features of all earlier regimes shrink to scale 0.2, so a model of the old regimes meets
    inputs near its boundary and grows unsure (what a label-free estimate can see). ``t`` is the slice.
    """
    import polars as pl

    g = torch.Generator().manual_seed(seed)
    n = slices * per_slice
    slice_idx = torch.arange(slices).repeat_interleave(per_slice)
    regime = torch.bucketize(slice_idx, torch.tensor(changes), right=True)
    x = torch.randn(n, 8, generator=g)
    first, second = 2 * regime, 2 * regime + 1  # at most 3 changes
    rows = torch.arange(n)
    if unsure:  # the features of every earlier regime shrink: old models meet inputs near their boundary
        x = torch.where(torch.arange(8) < 2 * regime[:, None], 0.2 * x, x)
    y = (x[rows, first] + x[rows, second] > 0).long()
    columns = {"t": slice_idx.numpy(), **{f"f{j}": x[:, j].numpy() for j in range(8)}, "y": y.numpy()}
    return pl.DataFrame(columns)
