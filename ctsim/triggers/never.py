"""Never trigger: train once on the first slice, then never again."""

from __future__ import annotations

from ctsim.triggers.base import TriggerContext


class NeverTrigger:
    """Fires once, on the batch that completes the first slice: the baseline a static model gives.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> replay(NeverTrigger(), toy_stream([3, 3, 3], arrival_batch=2))
    [1]
    """

    def observe(self, ctx: TriggerContext) -> str | None:
        if ctx.triggers_so_far == 0 and ctx.batch.end_of_slice:
            return "never: initial model on the first slice"
        return None
