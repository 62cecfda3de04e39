"""Learning-rate schedules (the ``schedule`` config group): a factor on the optimizer's ``lr`` per step.

A schedule restarts with every generation's training: ``epoch`` and ``step`` count from 0 within one
:class:`~ctsim.engine.TrainJob`, and ``total_steps`` is that job's :meth:`~ctsim.engine.TrainJob.steps`.
The sequential engine asks one schedule for one model's :meth:`factor`; the batched engine asks a
:class:`ScheduleTable` for all M models' factors with a few tensor ops.

>>> [StepDecay(every_epochs=2, gamma=0.5).factor(epoch, 0, 1) for epoch in range(5)]
[1.0, 1.0, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from ctsim.config import ConfigError, check, is_number, positive_int, positive_number

__all__ = ["Constant", "Cosine", "Schedule", "ScheduleTable", "StepDecay"]

# Kind codes of the ScheduleTable: one per schedule class.
CONSTANT, STEP_DECAY, COSINE = 0, 1, 2


class Schedule(Protocol):
    kind: ClassVar[int]

    def factor(self, epoch: int, step: int, total_steps: int) -> float:
        """The factor on ``lr`` for the optimizer step ``step`` (0-based) of ``total_steps``, in ``epoch``."""
        ...


@dataclass(frozen=True)
class Constant:
    """The optimizer's ``lr`` at every step.

    >>> Constant().factor(epoch=3, step=10, total_steps=20)
    1.0
    """

    kind: ClassVar[int] = CONSTANT

    def factor(self, epoch: int, step: int, total_steps: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepDecay:
    """Multiply ``lr`` by ``gamma`` every ``every_epochs`` epochs: ``gamma ** (epoch // every_epochs)``.

    torch's ``StepLR`` stepped once per epoch, restarted with every generation.

    >>> StepDecay(every_epochs=2, gamma=0.5).factor(epoch=5, step=0, total_steps=1)
    0.25
    """

    every_epochs: int = 1
    gamma: float = 0.1
    kind: ClassVar[int] = STEP_DECAY

    def __post_init__(self) -> None:
        ConfigError.raise_all(
            [positive_int("every_epochs", self.every_epochs), positive_number("gamma", self.gamma)]
        )

    def factor(self, epoch: int, step: int, total_steps: int) -> float:
        return self.gamma ** (epoch // self.every_epochs)


@dataclass(frozen=True)
class Cosine:
    """Cosine annealing from ``lr`` down towards ``min_factor * lr`` over each generation's training.

    ``min_factor + (1 - min_factor) * 0.5 * (1 + cos(pi * step / total_steps))``: 1 at the first step,
    ``(1 + min_factor) / 2`` half way. Loshchilov & Hutter's SGDR without restarts (torch's
    ``CosineAnnealingLR`` with ``T_max`` = the job's steps, stepped per optimizer step).

    >>> Cosine(min_factor=0.1).factor(epoch=0, step=0, total_steps=10)
    1.0
    >>> round(Cosine(min_factor=0.1).factor(epoch=0, step=5, total_steps=10), 12)
    0.55
    """

    min_factor: float = 0.0
    kind: ClassVar[int] = COSINE

    def __post_init__(self) -> None:
        ConfigError.raise_all(
            [
                check(
                    "min_factor",
                    self.min_factor,
                    is_number(self.min_factor) and 0 <= self.min_factor <= 1,
                    "a number in [0, 1]",
                )
            ]
        )

    def factor(self, epoch: int, step: int, total_steps: int) -> float:
        # ScheduleTable.factors repeats this formula op for op; keep the two in step.
        return self.min_factor + (1 - self.min_factor) * 0.5 * (
            1 + math.cos(math.pi * step / max(total_steps, 1))
        )


@dataclass(frozen=True)
class ScheduleTable:
    """M models' schedules as ``(M,)`` tensors, so that one call computes every model's factor.

    Knobs a schedule lacks hold neutral values (``every_epochs=1``, ``gamma=1``, ``min_factor=0``).

    >>> schedules = [Constant(), StepDecay(gamma=0.5), Cosine()]
    >>> table = ScheduleTable.from_schedules(schedules, "cpu", torch.float64)
    >>> table.factors(torch.tensor([2, 2, 0]), torch.tensor([4, 4, 1]), torch.tensor([6, 6, 2])).tolist()
    [1.0, 0.25, 0.5]
    """

    kind: torch.Tensor
    every_epochs: torch.Tensor
    gamma: torch.Tensor
    min_factor: torch.Tensor

    @classmethod
    def from_schedules(
        cls, schedules: Sequence[Schedule], device: torch.device | str, dtype: torch.dtype
    ) -> ScheduleTable:
        def column(key: str, neutral: float, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor([getattr(s, key, neutral) for s in schedules], dtype=dtype, device=device)

        return cls(
            kind=column("kind", CONSTANT, torch.int64),
            every_epochs=column("every_epochs", 1, torch.int64),
            gamma=column("gamma", 1.0, dtype),
            min_factor=column("min_factor", 0.0, dtype),
        )

    def factors(self, epoch: torch.Tensor, step: torch.Tensor, total_steps: torch.Tensor) -> torch.Tensor:
        """Model m's :meth:`Schedule.factor` at ``(epoch[m], step[m], total_steps[m])``: integer tensors in,
        ``(M,)`` factors of the table's dtype out (float64 gives the scalar factors to the last bit or so)."""
        step_decay = self.gamma ** (epoch // self.every_epochs)
        angle = math.pi * step.to(self.gamma.dtype) / total_steps.clamp(min=1).to(self.gamma.dtype)
        cosine = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + torch.cos(angle))
        return torch.where(
            self.kind == STEP_DECAY,
            step_decay,
            torch.where(self.kind == COSINE, cosine, torch.ones_like(cosine)),
        )
