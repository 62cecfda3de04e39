"""Amount trigger: train once ``every`` new samples have arrived."""

from __future__ import annotations

from ctsim.triggers.base import TriggerContext
from ctsim.validation import ConfigError, positive_int


class AmountTrigger:
    """Fires on the first batch with which at least ``every`` samples arrived since the last trigger.

    Modyn's ``DataAmountTrigger``. Decisions are made once per arrival batch, so it fires at most once
    per batch and the count restarts from zero after each trigger: choose a smaller
    ``stream.arrival_batch`` for finer-grained firing.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> stream = toy_stream([4, 4, 4], arrival_batch=2)
    >>> replay(AmountTrigger(every=3), stream)  # 4 samples after batch 1, 4 more after batch 3, ...
    [1, 3, 5]
    """

    def __init__(self, every: int = 1000):
        ConfigError.raise_all([positive_int("every", every)])
        self.every = every

    def observe(self, ctx: TriggerContext) -> str | None:
        n = len(ctx.since_trigger)
        return f"amount: {n} new samples ≥ {self.every}" if n >= self.every else None
