"""Ensemble trigger: combine triggers of any kind (Modyn's ``EnsembleTrigger``).

Every member observes every arrival batch and keeps its own state; their signal wants are merged
into the loop's one engine call. The ensemble fires when ``any``, ``all``, ``majority`` (more than
half) or ``at_least`` n of its members fire on the same batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal

from ctsim.stream import Stream
from ctsim.triggers.base import (
    Trigger,
    TriggerContext,
    Want,
    problems_of,
    signal_needs_of,
    trigger_problems,
    wants_of,
)
from ctsim.validation import ConfigError, Problem, check, is_int, one_of

MODES = ("any", "all", "majority", "at_least")


class EnsembleTrigger:
    """Fires when enough of its member triggers fire on the same arrival batch.

    Args:
        members: name → trigger (in YAML: name → a node with ``_target_``); a list is named m0, m1, …
        mode: ``any``, ``all``, ``majority`` or ``at_least``.
        at_least: with ``mode: at_least``, how many members must fire.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import AmountTrigger, TimeTrigger, replay
    >>> stream = toy_stream([4, 4, 4, 4], arrival_batch=2)
    >>> members = {"yearly": TimeTrigger(every=1), "amount": AmountTrigger(every=5)}
    >>> [replay(EnsembleTrigger(members, mode=mode), stream) for mode in ("any", "all")]
    [[1, 3, 5, 7], [3, 7]]
    """

    def __init__(
        self,
        members: Mapping[str, Trigger] | Sequence[Trigger] = (),
        mode: Literal["any", "all", "majority", "at_least"] = "any",
        at_least: int | None = None,
    ):
        if not isinstance(members, Mapping):
            members = {f"m{i}": m for i, m in enumerate(members)}
        n = len(members)
        ConfigError.raise_all(
            [
                check("members", "{}" if not n else list(members), n > 0, "at least one member trigger"),
                one_of("mode", mode, MODES),
                check(
                    "at_least",
                    at_least,
                    (mode != "at_least" and at_least is None)
                    or (mode == "at_least" and is_int(at_least) and 1 <= at_least <= max(n, 1)),
                    f"an integer from 1 to the number of members ({n}) with mode: at_least, else null",
                ),
            ]
            + [p for name, m in members.items() for p in trigger_problems(type(m), f"members.{name}")]
        )
        self.members, self.mode, self.at_least = dict(members), mode, at_least

    def needed(self) -> int:
        n = len(self.members)
        return {"any": 1, "all": n, "majority": n // 2 + 1, "at_least": self.at_least or 1}[self.mode]

    def signal_needs(self) -> dict[str, frozenset[str]]:
        return {
            f"members.{name}.{key}": needs
            for name, member in self.members.items()
            for key, needs in signal_needs_of(member).items()
        }

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        return {
            f"{name}/{key}": want
            for name, member in self.members.items()
            for key, want in wants_of(member, ctx).items()
        }

    def observe(self, ctx: TriggerContext) -> str | None:
        reasons = {}
        for name, member in self.members.items():
            own = {k.split("/", 1)[1]: v for k, v in ctx.signals.items() if k.split("/", 1)[0] == name}
            reason = member.observe(replace(ctx, signals=own))
            if reason is not None:
                reasons[name] = reason
        if len(reasons) < self.needed():
            return None
        return f"ensemble ({self.mode}): " + "; ".join(f"[{k}] {v}" for k, v in reasons.items())

    def problems(self, stream: Stream) -> list[Problem]:
        return [
            replace(p, key=f"members.{name}.{p.key}")
            for name, member in self.members.items()
            for p in problems_of(member, stream)
        ]
