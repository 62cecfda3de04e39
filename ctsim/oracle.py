"""The hindsight-optimal trigger schedule: the best composite accuracy reachable with K triggers.

``python -m ctsim.oracle RUN_DIR [--candidates NAME] [--out DIR]``

One variant of a run is the **candidate source**: it trains a generation at (at least) every slice,
e.g. ``trigger=always`` or ``trigger=time trigger.every=1``. Any trigger schedule is a subset of
those candidates; its composite accuracy follows from the candidates' accuracy matrix alone, with
the active-model rule of :mod:`ctsim.evaluation` (a chosen candidate trained through slice ``t``
serves ``t+1, …`` until a later chosen one replaces it; of candidates sharing a slice the later one
wins; slices before the first chosen candidate, or without test data, are left out of the mean). For
every budget ``K`` the oracle finds the subset of exactly ``K`` candidates with the highest
composite accuracy, and the **frontier**: the best with at most ``K``. A pipeline's **regret** is
the frontier at its own trigger count minus its composite accuracy.

**Exact for** candidates trained from scratch on all data seen (``selection=all
train.init=scratch``): the model trained at a point does not depend on which earlier points
triggered, so the candidate *is* the model any schedule through that point would train (up to the
training seed, which ctsim derives from the generation's index). **An approximation for**
fine-tuning (``train.init=finetune``) or ``selection=new`` (data since the last trigger): the
candidate at a point is the one trained with every earlier point triggered, and the model a sparse
schedule would train there differs. Regret against such candidates can be negative.

**The search** is exact for the objective: it is ``composite(...).mean`` of the schedule, not a
proxy. Slices left out of the mean make it a ratio, not a sum: the first chosen candidate sets where
coverage starts. A dynamic programme runs backwards over the candidates: the best accuracy *sum*
of the slices a candidate and ``k`` later chosen ones serve, per candidate and per number of
slices left out of its coverage (always 0 when a slice's cells are missing for all candidates or
none; more only where some candidates lack a value on a slice others have). Dividing by the count
for each first candidate and taking the best is then exact: O(G² K) for G candidates.

>>> m = torch.tensor([[0.9, 0.2, 0.1, 0.1], [0.1, 0.1, 0.9, 0.8]], dtype=torch.float64)
>>> [(s.chosen, round(s.accuracy, 3)) for s in best_schedules(m, [0, 1], torch.tensor([5, 5, 5, 5]))]
[([0], 0.133), ([0, 1], 0.6)]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
import torch

from ctsim.evaluation import active_generations, composite

TABLES = ("evals", "generations", "cost")
OUTPUTS = ("frontier.parquet", "regret.parquet", "frontier.png", "oracle.md")
FRONTIER_SCHEMA = {
    "candidates": pl.String,
    "seed": pl.Int64,
    "k": pl.Int64,
    "accuracy": pl.Float64,  # best with at most k triggers
    "triggers": pl.Int64,  # how many that best schedule uses
    "chosen": pl.List(pl.Int64),  # its generations
    "chosen_slices": pl.List(pl.Int64),  # and the slices they were trained through
    "exact_accuracy": pl.Float64,  # best with exactly k triggers
    "exact_chosen": pl.List(pl.Int64),
}


@dataclass(frozen=True)
class Schedule:
    """A subset of candidates (row indices, ascending) and its composite accuracy (NaN: none covered)."""

    chosen: list[int]
    accuracy: float


def schedule_accuracy(
    matrix: torch.Tensor, trained_slices: Sequence[int], n: torch.Tensor, chosen: Sequence[int]
) -> float:
    """Composite accuracy of the schedule that triggers exactly the candidates ``chosen`` (rows)."""
    rows = sorted(chosen)
    active = active_generations([trained_slices[r] for r in rows], matrix.shape[1])
    return composite(matrix[rows], active, n).mean


def best_schedules(matrix: torch.Tensor, trained_slices: Sequence[int], n: torch.Tensor) -> list[Schedule]:
    """For every K = 1..G, the schedule of exactly K candidates with the highest composite accuracy.

    ``matrix`` is the candidates' (G, S) accuracy (NaN: no value), ``trained_slices[g]`` the slice
    candidate ``g``'s training data ended in (non-decreasing), ``n`` the test samples per slice.
    """
    trained = torch.as_tensor(list(trained_slices), dtype=torch.long)
    if len(trained) != matrix.shape[0] or bool((trained.diff() < 0).any()):
        raise ValueError(
            f"trained_slices must give one non-decreasing slice per row of the {matrix.shape[0]}-row "
            f"matrix, got {trained.tolist()}"
        )
    seg, gap, cover, depth = _segments(matrix.double(), trained, n)
    layers, pointers = _layers(seg, gap, depth)
    schedules = []
    for k, layer in enumerate(layers):
        chosen = _trace(layer, cover, pointers[:k], gap)
        schedules.append(Schedule(chosen, schedule_accuracy(matrix, trained.tolist(), n, chosen)))
    return schedules


def _segments(
    matrix: torch.Tensor, trained: torch.Tensor, n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """What candidate g contributes when candidate j is the next chosen one (column G: none is).

    Returns the accuracy sum ``seg[g, j]`` over the slices g then serves that count, the number
    ``gap[g, j]`` of them g has no value on although another candidate has, ``cover[g]``: the
    slices after g's that count for some candidate (the coverage of a schedule g starts), and one
    more than the most gaps a schedule can have (a slice is served by one candidate at most).
    """
    num_slices = matrix.shape[1]
    valid = (n > 0).unsqueeze(0) & ~matrix.isnan()
    counted = valid.any(0)
    zero = torch.zeros(matrix.shape[0], 1, dtype=torch.float64)
    sums = torch.cat([zero, torch.where(valid, matrix, 0.0)], 1).cumsum(1)
    gaps = torch.cat([zero.long(), (counted & ~valid).long()], 1).cumsum(1)
    start = (trained + 1).clamp(max=num_slices)  # g serves slices start[g] … up to the next one's
    end = torch.cat([start, torch.tensor([num_slices])])
    seg = sums[:, end] - sums.gather(1, start.unsqueeze(1))
    gap = gaps[:, end] - gaps.gather(1, start.unsqueeze(1))
    cover = counted.long().sum() - torch.cat([torch.zeros(1, dtype=torch.long), counted.long().cumsum(0)])
    depth = int((counted & ~valid).any(0).sum()) + 1
    return seg, gap, cover[start], depth


def _layers(
    seg: torch.Tensor, gap: torch.Tensor, depth: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``layers[k][g, d]``: the best sum of g and k later chosen candidates with d gaps (-inf: none).

    ``pointers[k - 1][g, d]`` is the candidate chosen after g in that best schedule.
    """
    num = seg.shape[0]
    later = torch.ones(num, num, dtype=torch.bool).triu(1)
    rows = torch.arange(num)
    last = torch.full((num, depth), -math.inf, dtype=torch.float64)
    last[rows, gap[rows, num]] = seg[:, num]
    layers, pointers = [last], []
    deltas = gap[:, :num][later].unique().tolist()
    for _ in range(1, num):
        prev, best = layers[-1], torch.full_like(last, -math.inf)
        arg = torch.zeros(num, depth, dtype=torch.long)
        for delta in deltas:
            shifted = torch.full_like(prev, -math.inf)
            shifted[:, delta:] = prev[:, : depth - delta]
            value = seg[:, :num, None] + shifted[None]  # (g, next j, gaps d)
            value[~(later & (gap[:, :num] == delta))] = -math.inf
            value, j = value.max(1)
            better = value > best
            best, arg = torch.where(better, value, best), torch.where(better, j, arg)
        layers.append(best)
        pointers.append(arg)
    return layers, pointers


def _trace(layer: torch.Tensor, cover: torch.Tensor, pointers: list[torch.Tensor], gap: torch.Tensor) -> list[int]:
    """The best schedule of one layer: the best ratio over first candidates and gap counts, followed."""
    count = cover.unsqueeze(1) - torch.arange(layer.shape[1]).unsqueeze(0)
    ratio = torch.where(layer.isfinite() & (count > 0), layer / count.clamp(min=1), -math.inf)
    if not bool(ratio.isfinite().any()):  # no schedule of this size covers a slice: any one will do
        ratio = torch.where(layer.isfinite(), 0.0, -math.inf)
    g, d = divmod(int(ratio.flatten().argmax()), layer.shape[1])
    chosen = [g]
    for pointer in reversed(pointers):
        j = int(pointer[g, d])
        g, d = j, d - int(gap[g, j])
        chosen.append(g)
    return chosen
