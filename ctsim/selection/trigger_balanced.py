"""Trigger-balanced selection: equal shares of every trigger interval seen."""

from __future__ import annotations

import torch

from ctsim.selection.balanced import draw_balanced
from ctsim.selection.base import Presampler, SelectionContext


class TriggerBalanced(Presampler):
    """Equal shares of the data of every trigger interval, so that no period dominates training.

    Modyn's ``TriggerBalancedPresamplingStrategy``. With a budget of ``k`` samples, each interval gets
    ``k / intervals``; an interval with fewer samples gives all it has and the rest goes to the
    others (water-filling, as :class:`~ctsim.selection.ClassBalanced`). Without a budget, every
    interval is cut to the size of the smallest one. Draws within an interval are uniform.

    Args:
        limit, fraction, downsample: the budget and downsampler (see
            :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1, 2, 3, 4, 5], [6], [7, 8, 9, 10, 11]])
    >>> TriggerBalanced(limit=7).select(ctx).keys.tolist()
    [2, 3, 5, 6, 7, 10, 11]
    >>> TriggerBalanced().select(ctx).keys.tolist()
    [3, 6, 10]
    """

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        pool = _pool(ctx)
        if self.limit is None and self.fraction is None:
            return draw_balanced(pool, _intervals(ctx), None, ctx.generator)
        return pool

    def choose(self, pool: torch.Tensor, k: int, ctx: SelectionContext) -> torch.Tensor:
        return draw_balanced(pool, _intervals(ctx), k, ctx.generator)


def _pool(ctx: SelectionContext) -> torch.Tensor:
    return torch.cat([*ctx.earlier, ctx.since_trigger])


def _intervals(ctx: SelectionContext) -> torch.Tensor:
    """The trigger interval of every key of the pool: 0 for the oldest, ..."""
    sizes = torch.tensor([len(t) for t in (*ctx.earlier, ctx.since_trigger)])
    return torch.repeat_interleave(torch.arange(len(sizes)), sizes)
