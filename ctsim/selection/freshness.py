"""Freshness selection: the newest data first, or a fixed mix of new data and replayed old data."""

from __future__ import annotations

import torch

from ctsim.engine.base import share
from ctsim.selection.base import Presampler, SelectionContext, uniform
from ctsim.validation import ConfigError, check, is_number

DEFAULT_FRACTION = 0.5  # the budget when neither a limit nor a fraction is given


class Freshness(Presampler):
    """A budget filled with the freshest data (``mix=None``), or with a share ``mix`` of the data since
    the last trigger and the rest replayed from older data.

    ``mix=None`` keeps the ``k`` newest samples seen, in arrival order: a window sized by the budget.
    ``mix=p`` draws ``ceil(p·k)`` samples uniformly from the current trigger interval (all of it if it
    is smaller, the rest going to old data) and the others uniformly from all data before it, as
    Modyn's ``FreshnessSamplingStrategy`` mixes unused and used data (``unused_data_ratio``). Without a
    budget, half of the data seen (``fraction=0.5``).

    Args:
        mix: the share of the budget from the current trigger interval, in (0, 1), or None.
        limit: the budget in samples, or
        fraction: as a fraction of all data seen, rounded up (neither: 0.5).
        downsample: a downsampler (see :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]])
    >>> Freshness(limit=3).select(ctx).keys.tolist()
    [7, 8, 9]
    >>> Freshness(mix=0.5, limit=4).select(ctx).keys.tolist()
    [2, 5, 8, 9]
    """

    def __init__(
        self,
        mix: float | None = None,
        limit: int | None = None,
        fraction: float | None = None,
        downsample=None,
    ):
        ConfigError.raise_all(
            [
                check(
                    "mix", mix, mix is None or (is_number(mix) and 0 < mix < 1), "null or a number in (0, 1)"
                ),
            ]
        )
        if limit is None and fraction is None:
            fraction = DEFAULT_FRACTION
        super().__init__(limit, fraction, downsample)
        self.mix = mix

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        return ctx.seen

    def choose(self, pool: torch.Tensor, k: int, ctx: SelectionContext) -> torch.Tensor:
        if self.mix is None:
            return pool[len(pool) - k :].clone()
        split = len(pool) - len(ctx.since_trigger)
        old, new = pool[:split], pool[split:]
        n_old = min(k - min(share(k, self.mix), len(new)), len(old))
        return torch.cat([uniform(old, n_old, ctx.generator), uniform(new, k - n_old, ctx.generator)])
