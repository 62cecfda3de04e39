"""Time trigger: train every ``every`` slices."""

from __future__ import annotations

from ctsim.triggers.base import TriggerContext
from ctsim.validation import ConfigError, positive_int


class TimeTrigger:
    """Fires on the batch that completes every ``every``-th slice (slices ``every-1, 2·every-1, …``).

    Modyn's ``TimeTrigger`` with the slice (e.g. one year) as the unit of time. With ``every=1`` it
    trains once per slice, as in Modyn's and Wild-Time's Yearbook setups.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> stream = toy_stream([2, 2, 2, 2, 2, 2], arrival_batch=1)
    >>> replay(TimeTrigger(every=3), stream)  # batches 5 and 11 complete slices 2 and 5
    [5, 11]
    """

    def __init__(self, every: int = 1):
        ConfigError.raise_all([positive_int("every", every)])
        self.every = every

    def observe(self, ctx: TriggerContext) -> str | None:
        if ctx.batch.end_of_slice and (ctx.batch.slice + 1) % self.every == 0:
            return f"time: end of slice {ctx.batch.slice} (every {self.every})"
        return None
