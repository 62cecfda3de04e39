"""Downsampling: keep the part of a presampled candidate set that is most worth training on.

Set on any presampling policy as ``downsample`` (``selection/downsample=<name>``):

* :class:`ScoreDownsampler` scores samples with the model about to be trained
  (:mod:`ctsim.engine.scores`: ``loss``, ``grad_norm``, ``least_confidence``, ``entropy``, ``margin``),
  in one of two forms:

  - ``stb`` (sample-then-batch): when the trigger fires, score every candidate and keep a
    ``fraction`` of them, then train. The scores come from one forward pass of the model that training
    starts from (the active model when fine-tuning; the fresh initialisation otherwise). The loop asks
    the engine once per decision point for every pipeline's scores (the model-signal seam of
    :mod:`ctsim.triggers.base`), so the batched engine scores all models of one architecture in one
    ``vmap`` pass.
  - ``bts`` (batch-then-sample): inside every training step, score the step's batch with the model as
    it is and train on the highest-scoring ``ceil(fraction × batch)`` samples. The engines do it
    (:class:`~ctsim.engine.base.BatchThenSample`), each model with its own subset.

* :class:`RS2` (repeated sampling of random subsets): every epoch trains on a fresh random
  ``fraction`` of the candidates, with or without replacement across epochs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ctsim.engine.base import SCORES, BatchThenSample, EpochSubset
from ctsim.engine.scores import score, top
from ctsim.selection.base import Selection, budget, fraction_problem
from ctsim.validation import ConfigError, check, one_of

FORMS = ("stb", "bts")
DRAWS = ("top", "proportional")


class ScoreDownsampler:
    """Keep the highest-scoring ``fraction`` of the candidates (see the module docstring).

    Args:
        score: ``loss``, ``grad_norm``, ``least_confidence``, ``entropy`` or ``margin``.
        form: ``stb`` (score the candidates once, before training) or ``bts`` (score every batch).
        fraction: the share kept, rounded up.
        draw: ``top`` keeps the highest scores; ``proportional`` (``stb`` only) draws without
            replacement with probability proportional to the score.
        weights: with ``draw: proportional``, weigh each kept sample's loss by its importance weight
            ``1 / (n p_i)`` (normalised to mean 1), so that the expected loss is the full set's.

    >>> down = ScoreDownsampler("loss", fraction=0.5)
    >>> logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 0.0]])
    >>> signals = {"logits": logits}
    >>> down.apply(Selection(torch.tensor([10, 11, 12, 13])), signals, torch.tensor([0, 0, 0, 1]),
    ...            torch.Generator()).keys.tolist()  # the two highest losses
    [11, 13]
    """

    def __init__(
        self,
        score: str,
        form: str = "stb",
        fraction: float = 0.5,
        draw: str = "top",
        weights: bool = False,
    ):
        ConfigError.raise_all(
            [
                one_of("score", score, list(SCORES)),
                one_of("form", form, list(FORMS)),
                fraction_problem(fraction),
                one_of("draw", draw, list(DRAWS)),
                check("draw", draw, draw == "top" or form == "stb", "top with form=bts (it keeps the top)"),
                check("weights", weights, isinstance(weights, bool), "true or false"),
                check(  # `is not True`: a weights that is no boolean is named once, by the check above
                    "weights",
                    weights,
                    weights is not True or draw == "proportional",
                    "false unless draw=proportional",
                ),
            ]
        )
        self.score, self.form, self.fraction = score, form, fraction
        self.draw, self.weights = draw, weights

    def needs(self) -> frozenset[str]:
        """The model signals a ``stb`` pass needs (none for ``bts``: the engine scores while training)."""
        if self.form == "bts":
            return frozenset()
        return frozenset({"embeddings", "logits"} if self.score == "grad_norm" else {"logits"})

    def apply(
        self,
        selection: Selection,
        signals: dict[str, torch.Tensor] | None,
        y: torch.Tensor,
        generator: torch.Generator,
        bias: bool = True,
    ) -> Selection:
        """The downsampled selection. ``signals`` are the model's on ``selection.keys`` (``stb``);
        ``y`` the labels of those keys; ``bias`` whether the model's head has one (for ``grad_norm``)."""
        if self.form == "bts":
            return Selection(selection.keys, selection.weights, BatchThenSample(self.score, self.fraction))
        n = len(selection.keys)
        k = budget(n, None, self.fraction)
        if n == 0:
            return selection
        logits = signals["logits"]
        scores = score(self.score, signals.get("embeddings"), logits, y.to(logits.device), bias).cpu()
        if self.draw == "top":
            chosen = top(scores.double(), k).sort().values  # the kept keys in candidate order
        else:
            p = scores.double().clamp_min(0) + 1e-12
            p = p / p.sum()
            chosen = torch.multinomial(p, k, replacement=False, generator=generator).sort().values
        weights = None if selection.weights is None else selection.weights[chosen]
        if self.weights:
            w = 1.0 / (n * p[chosen])
            w = (w / w.mean()).to(torch.float32)
            weights = w if weights is None else weights * w
        return Selection(selection.keys[chosen], weights, scored=n)


class RS2:
    """RS2: each epoch trains on a fresh random ``fraction`` of the candidates (Okanovic et al., 2023).

    Without replacement (the default), epochs walk through one permutation of the candidates before
    any sample repeats; with replacement, each epoch draws its subset independently. No scoring pass.

    >>> sel = RS2(fraction=0.25).apply(Selection(torch.arange(8)), None, None, torch.Generator())
    >>> sel.epoch_subset, len(sel.keys)
    (EpochSubset(fraction=0.25, replacement=False), 8)
    """

    def __init__(self, fraction: float = 0.5, replacement: bool = False):
        ConfigError.raise_all(
            [
                fraction_problem(fraction),
                check("replacement", replacement, isinstance(replacement, bool), "true or false"),
            ]
        )
        self.fraction, self.replacement = fraction, replacement

    def needs(self) -> frozenset[str]:
        return frozenset()

    def apply(self, selection: Selection, signals, y, generator, bias: bool = True) -> Selection:
        subset = EpochSubset(self.fraction, self.replacement)
        return Selection(selection.keys, selection.weights, epoch_subset=subset)


@runtime_checkable
class Downsampled(Protocol):
    """Optional: a policy whose candidates a downsampler then cuts (None: no downsampling)."""

    downsample: ScoreDownsampler | RS2 | None


def downsampler_of(policy: object) -> ScoreDownsampler | RS2 | None:
    """The policy's downsampler: None unless it declares one (:class:`Downsampled`)."""
    return policy.downsample if isinstance(policy, Downsampled) else None
