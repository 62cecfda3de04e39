"""Uniform selection: a random sample of everything seen, or of the current trigger interval."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext
from ctsim.validation import ConfigError, one_of

OF = ["seen", "interval"]
DEFAULT_FRACTION = 0.5  # the budget when neither a limit nor a fraction is given


class Uniform(Presampler):
    """A budget drawn uniformly at random from all data seen (``of="seen"``) or from the data since the
    last trigger (``of="interval"``).

    Modyn's random presampling (``RandomPresamplingStrategy``). Without a budget it draws half the
    pool (``fraction=0.5``): keeping all of it is :class:`~ctsim.selection.AllData` or
    :class:`~ctsim.selection.NewData`.

    Args:
        of: the pool, ``"seen"`` or ``"interval"``.
        limit: keep this many samples of the pool, or
        fraction: this fraction of it, rounded up (neither: 0.5).
        downsample: a downsampler (see :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1, 2, 3], [4, 5, 6, 7]])
    >>> Uniform(fraction=0.5).select(ctx).keys.tolist()
    [0, 3, 4, 7]
    >>> Uniform(of="interval", limit=2).select(ctx).keys.tolist()
    [6, 7]
    """

    def __init__(
        self, of: str = "seen", limit: int | None = None, fraction: float | None = None, downsample=None
    ):
        ConfigError.raise_all([one_of("of", of, OF)])
        if limit is None and fraction is None:
            fraction = DEFAULT_FRACTION
        super().__init__(limit, fraction, downsample)
        self.of = of

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        return ctx.seen if self.of == "seen" else ctx.since_trigger
