"""Learning-rate schedules (the ``schedule`` config group): a factor on the optimizer's ``lr`` per step.

A schedule restarts with every generation's training: ``epoch`` and ``step`` count from 0 within one
:class:`~ctsim.engine.TrainJob`, and ``total_steps`` is that job's :meth:`~ctsim.engine.TrainJob.steps`.
Both engines ask a schedule for its :meth:`factor` with Python floats: the sequential engine at every
step, the batched engine for every step of every model before training (:mod:`ctsim.engine.plan`).

>>> [StepDecay(every_epochs=2, gamma=0.5).factor(epoch, 0, 1) for epoch in range(5)]
[1.0, 1.0, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from ctsim.validation import ConfigError, check, is_number, positive_int, positive_number

__all__ = ["Constant", "Cosine", "Schedule", "StepDecay"]


class Schedule(Protocol):
    def factor(self, epoch: int, step: int, total_steps: int) -> float:
        """The factor on ``lr`` for the optimizer step ``step`` (0-based) of ``total_steps``, in ``epoch``."""
        ...


@dataclass(frozen=True)
class Constant:
    """The optimizer's ``lr`` at every step.

    >>> Constant().factor(epoch=3, step=10, total_steps=20)
    1.0
    """

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
        return self.min_factor + (1 - self.min_factor) * 0.5 * (
            1 + math.cos(math.pi * step / max(total_steps, 1))
        )
