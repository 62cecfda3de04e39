"""A selection policy of your own: the new data, plus every ``stride``-th sample of the older data.

Run it from this folder (``_target_: my_selection.ThinnedHistory`` in ``conf/selection/my_selection.yaml``)::

    python -m ctsim --config-dir conf dataset=sea selection=my_selection
"""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext
from ctsim.validation import ConfigError, positive_int


class ThinnedHistory(Presampler):
    """Everything since the last trigger, and a thinned memory of the data before it.

    The pool is every ``stride``-th sample of the earlier trigger intervals (in arrival order), then
    the whole current interval. As a :class:`~ctsim.selection.base.Presampler` it gets the budget
    (``limit`` or ``fraction``: a seeded uniform draw from the pool) and ``downsample`` for free.

    Args:
        stride: keep one in ``stride`` of the older samples (1 keeps them all).
        limit, fraction, downsample: the budget and downsampler of every presampler.

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1, 2, 3], [4, 5, 6], [7, 8]])  # the last interval is the new one
    >>> ThinnedHistory(stride=3).select(ctx).keys.tolist()
    [0, 3, 6, 7, 8]
    >>> len(ThinnedHistory(stride=3, limit=2).select(ctx).keys)
    2
    """

    def __init__(
        self,
        stride: int = 4,
        limit: int | None = None,
        fraction: float | None = None,
        downsample=None,
    ):
        ConfigError.raise_all([positive_int("stride", stride)])
        super().__init__(limit, fraction, downsample)
        self.stride = stride

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        older = torch.cat([*ctx.earlier, ctx.since_trigger[:0]])  # [:0]: an empty tensor of the right type
        return torch.cat([older[:: self.stride], ctx.since_trigger])
