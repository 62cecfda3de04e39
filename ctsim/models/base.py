"""How the engines build models: a factory (a ``functools.partial`` from the ``model`` config) plus
the dataset's input shape and class count.

A model's randomness must be its own for the batched engine to equal training it alone. So
:meth:`ModelSpec.build` gives every plain ``nn.Dropout`` seeded masks (it becomes a
:class:`~ctsim.models.dropout.SeededDropout` of the same probability: same distribution, masks drawn
from the model's own seed), and refuses torch's other random layers, whose masks would come from
torch's one global random stream, with an error that says what to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctsim.models.dropout import SeededDropout
from ctsim.validation import ConfigError, Problem, first_line

# Layers that draw from torch's global random stream in training, and have no seeded counterpart here.
UNSEEDED = (
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.RReLU,
)


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
        """A fresh model; with ``seed``, its initial weights depend on that seed alone.

        Plain ``nn.Dropout`` layers become :class:`SeededDropout` (see the module docstring).
        """
        if seed is None:
            model = seed_dropout(self.factory(input_shape=self.input_shape, num_classes=self.num_classes))
        else:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator alone: torch.manual_seed would also queue a CUDA seed call.
                torch.default_generator.manual_seed(seed)
                model = seed_dropout(self.factory(input_shape=self.input_shape, num_classes=self.num_classes))
        return model.to(dtype)

    @property
    def key(self) -> str:
        return f"{self.factory!r}|{self.input_shape}|{self.num_classes}"

    @property
    def name(self) -> str:
        func = getattr(self.factory, "func", self.factory)
        return getattr(func, "__name__", repr(func))


def unsaved_seeded_buffers(spec: ModelSpec) -> list[str]:
    """Non-persistent buffers whose values depend on the seed (e.g. a fixed random projection registered
    with ``persistent=False``): a state dict does not hold them, so a model evaluated from its state
    dict would get other values. :class:`SeededDropout`'s own seed is meant to be fresh per model."""
    a, b = spec.build(seed=1), spec.build(seed=2)
    persistent = set(a.state_dict())
    dropout = {
        f"{name}.{k}" if name else k
        for name, m in a.named_modules()
        if isinstance(m, SeededDropout)
        for k in ("seed", "calls")
    }
    theirs = dict(b.named_buffers())
    return [
        k
        for k, v in a.named_buffers()
        if k not in persistent and k not in dropout and not torch.equal(v, theirs[k])
    ]


_LEAST: dict[str, int] = {}


def least_batch(spec: ModelSpec) -> int:
    """The fewest samples a training batch of this model may hold: 2 for a model whose training
    forward cannot take a single sample, else 1. A BatchNorm over ``(batch, features)`` is such a
    layer: torch refuses to take batch statistics of one value per channel. Found by one training
    forward on a batch of one (zeros: only the shapes matter), once per architecture; the engines then
    merge an epoch's one-sample last batch into the batch before it
    (:func:`~ctsim.engine.base.batch_sizes`).

    >>> bn = lambda input_shape, num_classes: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    >>> least_batch(ModelSpec(bn, (3,), 4)), least_batch(ModelSpec(lambda **_: nn.Linear(3, 2), (3,), 2))
    (2, 1)
    """
    if spec.key not in _LEAST:
        model = spec.build(seed=0).train()
        least = 1
        with torch.no_grad():
            try:
                model(torch.zeros(1, *spec.input_shape))
            except Exception:
                try:
                    model(torch.zeros(2, *spec.input_shape))
                    least = 2
                except Exception:  # no batch size works: output_problem names what is wrong
                    pass
        _LEAST[spec.key] = least
    return _LEAST[spec.key]


def output_problem(spec: ModelSpec) -> str | None:
    """What keeps a model's forward from giving logits ``(batch, classes)`` on a batch of the dataset's
    inputs (zeros: only the shapes matter), or None: a model that cannot take the inputs, or gives
    other outputs, would otherwise train until a loss or the evaluation fails on it.

    >>> output_problem(ModelSpec(lambda input_shape, num_classes: nn.Linear(3, num_classes + 1), (3,), 2))
    'gives (2, 3) on a batch of 2 inputs of shape (3,); the engines need logits (2, 2), one per class'
    """
    model = spec.build(seed=0).eval()
    inputs = torch.zeros(2, *spec.input_shape)
    try:
        with torch.no_grad():
            out = model(inputs)
    except Exception as e:
        cause = f"{type(e).__name__}: {first_line(e)}"
        return f"cannot take a batch of inputs of shape {spec.input_shape} ({cause})"
    if not isinstance(out, torch.Tensor):
        return f"returns a {type(out).__name__}; the engines need one tensor of logits (batch, classes)"
    if tuple(out.shape) != (2, spec.num_classes):
        return (
            f"gives {tuple(out.shape)} on a batch of 2 inputs of shape {spec.input_shape}; the engines "
            f"need logits (2, {spec.num_classes}), one per class"
        )
    return None


def seed_dropout(model: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Dropout`` of ``model`` by a :class:`SeededDropout` of the same ``p``;
    raise a ConfigError naming any other layer that draws from torch's global random stream.

    >>> net = seed_dropout(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2)))
    >>> type(net[1]).__name__, net[1].p
    ('SeededDropout', 0.2)
    >>> seed_dropout(nn.Sequential(nn.Dropout2d(0.1)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctsim.validation.ConfigError: invalid config:
      0=Dropout2d(p=0.1, inplace=False): expected layers with reproducible per-model randomness: ...
    """
    problems = []
    for name, module in list(model.named_modules()):
        if isinstance(module, UNSEEDED):
            problems.append(
                Problem(
                    name or type(model).__name__,
                    module,
                    "layers with reproducible per-model randomness: torch's "
                    f"{type(module).__name__} draws from the global random stream, which the batched "
                    "engine cannot split per model; use ctsim.models.SeededDropout (element-wise) "
                    "or nn.Dropout (made seeded automatically)",
                )
            )
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, child_name, SeededDropout(child.p))
    if type(model) is nn.Dropout:
        return SeededDropout(model.p)
    ConfigError.raise_all(problems)
    return model
