"""The trigger contract: one decision per arrival batch.

A trigger sees a narrow context (the arrival batch, the keys seen so far, the keys since the last
trigger, how many triggers fired before) and answers with the reason to train, or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ctsim.stream import ArrivalBatch, Stream


@dataclass(frozen=True)
class TriggerContext:
    """What a trigger may look at when ``batch`` arrives (``batch`` is already in ``seen``)."""

    batch: ArrivalBatch
    seen: torch.Tensor
    since_trigger: torch.Tensor
    triggers_so_far: int


class Trigger(Protocol):
    """Decides, once per arrival batch, whether to train a new model generation."""

    def observe(self, ctx: TriggerContext) -> str | None:
        """The reason to train now, or None to wait."""
        ...


def replay(trigger: Trigger | Callable[[], Trigger], stream: Stream) -> list[int]:
    """Run one trigger alone over a stream; return the indices of the batches it fires on.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import TimeTrigger
    >>> replay(TimeTrigger(every=2), toy_stream([1, 1, 1, 1, 1]))
    [1, 3]
    """
    fired: list[int] = []
    last = 0
    for batch in stream.batches:
        ctx = TriggerContext(
            batch=batch,
            seen=stream.arrival_order[: batch.stop],
            since_trigger=stream.arrival_order[last : batch.stop],
            triggers_so_far=len(fired),
        )
        if trigger.observe(ctx) is not None:
            fired.append(batch.index)
            last = batch.stop
    return fired
