"""How the engines build models: a factory (a ``functools.partial`` from the ``model`` config) plus
the dataset's input shape and class count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a pipeline's model with a seeded initialisation.

    ``key`` identifies the architecture: models with equal keys have parameters of the same names and
    shapes, so the batched engine can stack them.
    """

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int

    def build(self, seed: int | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
        """A fresh model; with ``seed``, its initial weights depend on that seed alone."""
        if seed is None:
            model = self.factory(input_shape=self.input_shape, num_classes=self.num_classes)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self.factory(input_shape=self.input_shape, num_classes=self.num_classes)
        return model.to(dtype)

    @property
    def key(self) -> str:
        return f"{self.factory!r}|{self.input_shape}|{self.num_classes}"

    @property
    def name(self) -> str:
        func = getattr(self.factory, "func", self.factory)
        return getattr(func, "__name__", repr(func))
