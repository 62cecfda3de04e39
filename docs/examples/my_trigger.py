"""A trigger of your own: train when the active model gets too much of an arriving batch wrong.

Run it from this folder (``python -m`` puts the working folder on the import path, so ``_target_:
my_trigger.ErrorRateTrigger`` in ``conf/trigger/my_trigger.yaml`` finds the class)::

    python -m ctsim --config-dir conf dataset=sea trigger=my_trigger
"""

from __future__ import annotations

from ctsim.triggers.base import TriggerContext, Want
from ctsim.validation import ConfigError, check, is_number


class ErrorRateTrigger:
    """Fires when the active model misclassifies more than ``max_error`` of an arriving batch.

    Before the first model there is nothing to score, so the first batch trains it. After that the
    trigger asks for the active model's predictions on the batch (``wants``): the loop gathers every
    pipeline's wants at a decision point and asks the engine once, so this costs one batched forward
    pass shared with the other pipelines. Labels count as arriving with the data (the built-in
    ``trigger=performance`` also handles labels that come later).

    Args:
        max_error: the share of wrong predictions in (0, 1) above which it trains.

    >>> import torch
    >>> from functools import partial
    >>> from ctsim.engine import SequentialEngine
    >>> from ctsim.models import MLP, ModelSpec
    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> stream = toy_stream([20, 20, 20, 20])  # 4 slices, one arrival batch each
    >>> spec = ModelSpec(partial(MLP, hidden=[4]), (1, 4, 4), 2)
    >>> state = spec.build(seed=0).state_dict()  # one fixed model answers every want
    >>> replay(ErrorRateTrigger(max_error=0.99), stream, SequentialEngine(device="cpu"), spec, state)
    [0]
    >>> ErrorRateTrigger(max_error=1.5)
    Traceback (most recent call last):
    ...
    ctsim.validation.ConfigError: invalid config:
      max_error=1.5: expected a number in (0, 1)
    """

    def __init__(self, max_error: float = 0.3):
        ok = is_number(max_error) and 0 < max_error < 1
        ConfigError.raise_all([check("max_error", max_error, ok, "a number in (0, 1)")])
        self.max_error = max_error

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        """The active model's predictions on the arriving batch, under the name ``batch``."""
        return {"batch": Want(ctx.batch.keys, frozenset({"predictions"}))}

    def observe(self, ctx: TriggerContext) -> str | None:
        """The reason to train now, or None to wait."""
        if ctx.active is None:
            return "error rate: the first model"
        predicted = ctx.signals["batch"]["predictions"]
        error = (predicted != ctx.y[ctx.batch.keys]).float().mean().item()
        return f"error rate: {error:.2f} > {self.max_error}" if error > self.max_error else None
