"""Always trigger: train on every arrival batch."""

from __future__ import annotations

from ctsim.triggers.base import TriggerContext


class AlwaysTrigger:
    """Fires on every arrival batch: the upper bound on freshness (and on cost).

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> replay(AlwaysTrigger(), toy_stream([2, 2], arrival_batch=1))
    [0, 1, 2, 3]
    """

    def observe(self, ctx: TriggerContext) -> str | None:
        return "always"
