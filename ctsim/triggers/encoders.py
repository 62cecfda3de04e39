"""Encoders: what a drift trigger compares, as ``(n, d)`` features of the samples.

* :class:`ModelEmbeddings` (the default): the active model's penultimate layer, from the engine's
  batched signal pass (Modyn's drift trigger embeds with the current model). It changes with every
  generation, so embeddings are cached per generation.
* :class:`RandomProjection`: a fixed Gaussian projection of the flattened inputs, the same for every
  generation (a model-free reference; Modyn #417).
* :class:`RawFeatures`: the flattened inputs.
* Any ``torch.nn.Module`` named by ``_target_`` (Modyn #574): a fixed encoder of the user's, e.g. a
  pretrained backbone. Its output is flattened to ``(n, d)``; its shape is checked against the
  dataset before the replay.

Fixed encoders run inside the trigger, on the data's device, without gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from ctsim.validation import ConfigError, Problem, positive_int, seed_problem


class ModelEmbeddings:
    """The active model's embeddings (its ``embed``): asked from the engine, never computed here.

    >>> ModelEmbeddings().needs_model
    True
    """

    needs_model = True
    name = "model"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("model embeddings come from the engine's signal pass, not from encode()")


class RawFeatures:
    """The inputs themselves, flattened to ``(n, d)``.

    >>> RawFeatures().encode(torch.ones(3, 1, 2, 2)).shape
    torch.Size([3, 4])
    """

    needs_model = False
    name = "raw"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1).to(torch.float32)


class RandomProjection:
    """A fixed random projection of the flattened inputs to ``dim`` features (Gaussian, scaled by 1/√dim).

    The matrix depends on ``seed`` and the input size only: every generation and pipeline sees the
    same features.

    >>> p = RandomProjection(dim=3)
    >>> p.encode(torch.ones(5, 1, 4, 4)).shape
    torch.Size([5, 3])
    >>> bool((p.encode(torch.ones(2, 16)) == RandomProjection(dim=3).encode(torch.ones(2, 16))).all())
    True
    """

    needs_model = False
    name = "projection"

    def __init__(self, dim: int = 32, seed: int = 0):
        ConfigError.raise_all([positive_int("dim", dim), seed_problem("seed", seed)])
        self.dim, self.seed = dim, seed
        self._matrix: torch.Tensor | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1).to(torch.float32)
        if self._matrix is None or self._matrix.shape[0] != flat.shape[1]:
            g = torch.Generator().manual_seed(self.seed)
            self._matrix = torch.randn(flat.shape[1], self.dim, generator=g) / self.dim**0.5
        self._matrix = self._matrix.to(flat.device)
        return flat @ self._matrix


class ModuleEncoder:
    """A user's ``torch.nn.Module`` as a fixed encoder (evaluation mode, no gradients)."""

    needs_model = False

    def __init__(self, net: nn.Module):
        self.net = net.eval()
        self.name = type(net).__name__

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        param = next(self.net.parameters(), None)
        if param is not None and param.device != x.device:
            self.net = self.net.to(x.device)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            out = self.net(x.to(dtype))
        return out.reshape(len(x), -1).to(torch.float32)

    def problems(self, input_shape: tuple[int, ...]) -> list[Problem]:
        """Does the module map ``(n, *input_shape)`` to ``(n, ...)``? Tried on two zero samples."""
        try:
            out = self.encode(torch.zeros(2, *input_shape))
        except Exception as e:
            detail = " ".join(str(e).split())[:200]
            return [
                Problem(
                    "encoder",
                    self.name,
                    f"a module that takes inputs of shape (n, {', '.join(map(str, input_shape))}) "
                    f"({type(e).__name__}: {detail})",
                )
            ]
        if out.ndim != 2 or out.shape[0] != 2 or out.shape[1] == 0:
            return [Problem("encoder", self.name, "a module whose output has one row per sample")]
        return []


Encoder = ModelEmbeddings | RawFeatures | RandomProjection | ModuleEncoder


def as_encoder(encoder: object) -> Encoder:
    """A ready encoder: built-ins as they are, a ``torch.nn.Module`` wrapped."""
    if isinstance(encoder, (ModelEmbeddings, RawFeatures, RandomProjection, ModuleEncoder)):
        return encoder
    if isinstance(encoder, nn.Module):
        return ModuleEncoder(encoder)
    raise ConfigError(
        [
            Problem(
                "encoder",
                type(encoder).__name__,
                "model, projection, raw, or a node with a _target_ that builds a torch.nn.Module",
            )
        ]
    )
