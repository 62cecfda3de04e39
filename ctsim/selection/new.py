"""New-data selection: train on the data since the last trigger, plus an optional tail."""

from __future__ import annotations

import torch

from ctsim.config import ConfigError, check, is_int
from ctsim.selection.base import Selection, SelectionContext


class NewData:
    """The data since the last trigger, plus the data of the ``tail`` triggers before it.

    Modyn's ``NewDataStrategy`` with ``tail_triggers``. ``tail=0`` (the default) trains on new data
    only, the usual choice with fine-tuning.

    >>> from ctsim.selection.base import context_from_intervals
    >>> ctx = context_from_intervals([[0, 1], [2], [3, 4]])
    >>> NewData().select(ctx).keys.tolist()
    [3, 4]
    >>> NewData(tail=1).select(ctx).keys.tolist()
    [2, 3, 4]
    """

    def __init__(self, tail: int = 0):
        ConfigError.raise_all([check("tail", tail, is_int(tail) and tail >= 0, "an integer ≥ 0")])
        self.tail = tail

    def select(self, ctx: SelectionContext) -> Selection:
        tail = list(ctx.earlier[len(ctx.earlier) - self.tail :]) if self.tail else []
        return Selection(keys=torch.cat([*tail, ctx.since_trigger]))
