"""Optimizer settings (the ``optimizer`` config group): SGD, Adam and AdamW.

Each is a small validated record of hyperparameters. :meth:`torch` builds the plain ``torch.optim``
optimizer that the sequential (reference) engine uses; the batched engine applies the same update
rule functionally to stacked parameters (:mod:`ctsim.engine.functional_optim`).

>>> SGD(lr=0.1, momentum=0.9).torch([torch.nn.Parameter(torch.zeros(2))]).defaults["momentum"]
0.9
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ctsim.validation import ConfigError, Problem, check, is_number, non_negative_number, positive_number


def _unit_interval(key: str, value: object) -> Problem | None:
    return check(key, value, is_number(value) and 0 <= value < 1, "a number in [0, 1)")


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        ConfigError.raise_all(
            [
                positive_number("lr", self.lr),
                _unit_interval("momentum", self.momentum),
                non_negative_number("weight_decay", self.weight_decay),
                check("nesterov", self.nesterov, isinstance(self.nesterov, bool), "true or false"),
                check(
                    "nesterov",
                    self.nesterov,
                    not self.nesterov or (is_number(self.momentum) and self.momentum > 0),
                    "false unless momentum > 0",
                ),
            ]
        )

    def torch(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov
        )


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba, 2015) with L2 weight decay added to the gradient."""

    lr: float = 0.001
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        betas = tuple(self.betas)
        object.__setattr__(self, "betas", betas)
        ConfigError.raise_all(
            [
                positive_number("lr", self.lr),
                check(
                    "betas",
                    list(betas),
                    len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
                    "two numbers in [0, 1)",
                ),
                positive_number("eps", self.eps),
                non_negative_number("weight_decay", self.weight_decay),
            ]
        )

    def torch(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay
        )


@dataclass(frozen=True)
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay."""

    weight_decay: float = 0.01

    def torch(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay
        )
