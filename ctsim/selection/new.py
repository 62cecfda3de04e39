"""New-data selection: train on the data since the last trigger, plus an optional tail."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext
from ctsim.validation import ConfigError, check, is_int


class NewData(Presampler):
    """The data since the last trigger, plus the data of the ``tail`` triggers before it.

    Modyn's ``NewDataStrategy`` with ``tail_triggers``. ``tail=0`` (the default) trains on new data
    only, the usual choice with fine-tuning. A budget (``limit`` or ``fraction``) draws uniformly
    from that pool.

    Args:
        tail: how many earlier trigger intervals to add to the current one.
        limit, fraction, downsample: the budget and downsampler (see :class:`Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1], [2], [3, 4]])
    >>> NewData().select(ctx).keys.tolist()
    [3, 4]
    >>> NewData(tail=1).select(ctx).keys.tolist()
    [2, 3, 4]
    >>> NewData(tail=3).select(ctx).keys.tolist()  # more than the 2 earlier intervals: all of them
    [0, 1, 2, 3, 4]
    >>> len(NewData(tail=2, limit=3).select(ctx).keys)
    3
    """

    def __init__(
        self, tail: int = 0, limit: int | None = None, fraction: float | None = None, downsample=None
    ):
        ConfigError.raise_all([check("tail", tail, is_int(tail) and tail >= 0, "an integer ≥ 0")])
        super().__init__(limit, fraction, downsample)
        self.tail = tail

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        # max(0, ...): a tail longer than the intervals so far takes them all (a negative start would
        # count from the end and drop the oldest)
        tail = list(ctx.earlier[max(0, len(ctx.earlier) - self.tail) :]) if self.tail else []
        return torch.cat([*tail, ctx.since_trigger])
