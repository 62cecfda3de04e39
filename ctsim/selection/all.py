"""All-data selection: train on everything seen so far."""

from __future__ import annotations

from ctsim.selection.base import Selection, SelectionContext


class AllData:
    """Every sample seen so far: no forgetting, at a cost that grows with the stream.

    Modyn's ``NewDataStrategy`` with ``tail_triggers=None``.

    >>> from ctsim.selection.base import context_from_intervals
    >>> AllData().select(context_from_intervals([[0, 1], [2], [3, 4]])).keys.tolist()
    [0, 1, 2, 3, 4]
    """

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection(keys=ctx.seen.clone())
