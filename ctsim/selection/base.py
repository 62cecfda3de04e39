"""The selection contract: at each trigger, choose the keys (and optional weights) to train on.

A policy sees a narrow context: the keys seen so far, the keys of the current trigger interval and
of each earlier one, and a seeded generator for random choices. It returns sample keys; it never
touches the data tensors or the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class SelectionContext:
    """What a selection policy may look at when a trigger fires.

    ``since_trigger`` holds the keys that arrived since the previous trigger (this batch included);
    ``earlier`` the keys of each earlier trigger interval, oldest first. Together they make ``seen``.
    """

    seen: torch.Tensor
    since_trigger: torch.Tensor
    earlier: tuple[torch.Tensor, ...]
    generator: torch.Generator


@dataclass(frozen=True)
class Selection:
    """The training set of one generation: sample keys, and per-sample loss weights (None = equal)."""

    keys: torch.Tensor
    weights: torch.Tensor | None = None


class SelectionPolicy(Protocol):
    """Chooses the training set of the next model generation."""

    def select(self, ctx: SelectionContext) -> Selection: ...


def context_from_intervals(intervals: list[list[int]], seed: int = 0) -> SelectionContext:
    """A context whose trigger intervals hold the given keys (the last is the current one).

    >>> ctx = context_from_intervals([[0, 1], [2], [3, 4]])
    >>> ctx.seen.tolist(), ctx.since_trigger.tolist(), [e.tolist() for e in ctx.earlier]
    ([0, 1, 2, 3, 4], [3, 4], [[0, 1], [2]])
    """
    tensors = [torch.tensor(i, dtype=torch.long) for i in intervals]
    return SelectionContext(
        seen=torch.cat(tensors),
        since_trigger=tensors[-1],
        earlier=tuple(tensors[:-1]),
        generator=torch.Generator().manual_seed(seed),
    )
