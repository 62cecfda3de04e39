"""All-data selection: train on everything seen so far."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext


class AllData(Presampler):
    """Every sample seen so far: no forgetting, at a cost that grows with the stream.

    Modyn's ``NewDataStrategy`` with ``tail_triggers=None``. A budget (``limit`` or ``fraction``)
    draws uniformly from everything seen; :class:`~ctsim.selection.Uniform` is the same with the
    budget required.

    Args:
        limit, fraction, downsample: the budget and downsampler (see :class:`Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> AllData().select(context_from_intervals([[0, 1], [2], [3, 4]])).keys.tolist()
    [0, 1, 2, 3, 4]
    """

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        return ctx.seen
