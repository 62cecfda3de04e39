"""Window selection: the data of the last slices, the last stretch of time, or the last samples."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext
from ctsim.validation import ConfigError, one_of, positive_int, positive_number

UNITS = ["slices", "time", "samples"]


class Window(Presampler):
    """A sliding window over the data seen: older data is forgotten, whatever the triggers did.

    The window holds the seen samples

    * ``unit="slices"``: of the last ``size`` slices, up to and including the newest slice seen;
    * ``unit="time"``: of time ``> newest − size``, in the stream's time unit (e.g. years);
    * ``unit="samples"``: the last ``size`` to arrive.

    :class:`~ctsim.selection.NewData` with a ``tail`` is the same, counted in trigger intervals. A
    budget (``limit`` or ``fraction``) draws uniformly from the window.

    Args:
        size: the window's length, in ``unit``: an integer ≥ 1 for slices and samples, a number > 0
            for time.
        unit: ``"slices"``, ``"time"`` or ``"samples"``.
        limit, fraction, downsample: the budget and downsampler (see
            :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> from ctsim.stream import toy_stream
    >>> stream = toy_stream([2, 2, 2])  # keys 0-1 in slice 0, 2-3 in slice 1, 4-5 in slice 2
    >>> ctx = context_from_intervals([[0, 1, 2], [3, 4]], stream=stream)
    >>> Window(size=2).select(ctx).keys.tolist()
    [2, 3, 4]
    >>> Window(size=2, unit="samples").select(ctx).keys.tolist()
    [3, 4]
    """

    def __init__(
        self,
        size: float = 5,
        unit: str = "slices",
        limit: int | None = None,
        fraction: float | None = None,
        downsample=None,
    ):
        size_problem = positive_number("size", size) if unit == "time" else positive_int("size", size)
        ConfigError.raise_all([one_of("unit", unit, UNITS), size_problem])
        super().__init__(limit, fraction, downsample)
        self.size, self.unit = size, unit

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        seen = ctx.seen
        if self.unit == "samples" or len(seen) == 0:
            return seen[max(0, len(seen) - self.size) :]
        if ctx.stream is None:
            raise ValueError(f"Window(unit={self.unit!r}) needs the stream: the SelectionContext has none")
        where = ctx.stream.slice[seen] if self.unit == "slices" else ctx.stream.time[seen]
        return seen[where > where.max() - self.size]
