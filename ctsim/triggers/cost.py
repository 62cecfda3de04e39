"""Cost-aware trigger: train when what waiting costs reaches what training would cost.

Modyn's ``CostTrigger``: it fires when ``regret × conversion_factor ≥ forecast cost of training
now``.

* **Regret** since the last trigger: ``latency`` (incorporation latency: the sum over the samples
  waiting of the time each has waited, in sample × the stream's time unit, e.g. sample-years on
  portraits), or ``misclassifications`` (avoidable misclassifications of the active model on the
  arriving batches: errors beyond the error rate it had on its first batch).
* **Forecast:** a model of training cost against the samples that arrived since the previous trigger,
  fitted online on this pipeline's observed trainings: a least-squares line
  (``scipy.stats.linregress``) once two trainings of different sizes are known, proportional to the
  one known before that. The cost is training FLOPs (``cost: flops``, reproducible) or seconds
  (``cost: seconds``, wall clock: decisions then vary between runs and engines).

The first model is trained when the first slice is complete: there is no cost to forecast before.
"""

from __future__ import annotations

from typing import Literal

from ctsim.triggers.base import TriggerContext, Want
from ctsim.validation import ConfigError, check, is_number, one_of


class CostTrigger:
    """Fires when regret × ``conversion_factor`` reaches the forecast cost of training now.

    Args:
        regret: ``latency`` or ``misclassifications``.
        conversion_factor: cost units (FLOPs or seconds) one unit of regret is worth.
        cost: ``flops`` or ``seconds``.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> stream = toy_stream([4] * 8, arrival_batch=2)  # time: 0 … 8, slices of one unit
    >>> replay(CostTrigger(conversion_factor=1.0), stream)  # forecast: 1 FLOP per sample (toy replay)
    [1, 6, 10, 14]
    >>> replay(CostTrigger(conversion_factor=0.5), stream)  # regret worth less: it waits longer
    [1, 10]
    """

    def __init__(
        self,
        regret: Literal["latency", "misclassifications"] = "latency",
        conversion_factor: float = 1e8,
        cost: Literal["flops", "seconds"] = "flops",
    ):
        ConfigError.raise_all(
            [
                one_of("regret", regret, ["latency", "misclassifications"]),
                check(
                    "conversion_factor",
                    conversion_factor,
                    is_number(conversion_factor) and conversion_factor > 0,
                    "a number > 0 (cost units per unit of regret)",
                ),
                one_of("cost", cost, ["flops", "seconds"]),
            ]
        )
        self.regret, self.conversion_factor, self.cost = regret, float(conversion_factor), cost
        self._generation: int | None = None
        self._expected: float | None = None
        self._avoidable = 0.0

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        if self.regret != "misclassifications" or ctx.active is None:
            return {}
        return {"batch": Want(ctx.batch.keys, frozenset({"predictions"}))}

    def observe(self, ctx: TriggerContext) -> str | None:
        if ctx.active is None:
            return "cost: initial model on the first slice" if ctx.batch.end_of_slice else None
        regret = self.regret_now(ctx)
        forecast = self.forecast(ctx)
        if regret * self.conversion_factor >= forecast:
            value = f"regret {regret:.4g} × {self.conversion_factor:g}"
            return f"cost: {value} ≥ forecast {forecast:.4g} {self.cost}"
        return None

    def regret_now(self, ctx: TriggerContext) -> float:
        """The regret accumulated since the last trigger, with this batch."""
        if self.regret == "latency":
            time = ctx.stream.time
            now = time[ctx.batch.keys[-1]]
            return float((now - time[ctx.since_trigger]).sum())
        if self._generation != ctx.active.generation:
            self._generation, self._expected, self._avoidable = ctx.active.generation, None, 0.0
        predictions = ctx.signals["batch"]["predictions"].cpu()
        wrong = float((predictions != ctx.y[ctx.batch.keys.to(ctx.y.device)].cpu()).sum())
        n = len(predictions)
        if self._expected is None:
            self._expected = 1 - wrong / n
        else:
            self._avoidable = max(0.0, self._avoidable + wrong - (1 - self._expected) * n)
        return self._avoidable

    def forecast(self, ctx: TriggerContext) -> float:
        """The cost of training now, from this pipeline's observed trainings (at least one)."""
        sizes = [float(g.new_samples) for g in ctx.generations]
        costs = [float(g.flops if self.cost == "flops" else g.seconds) for g in ctx.generations]
        n = float(len(ctx.since_trigger))
        if len(set(sizes)) < 2:
            per_sample = sum(costs) / max(sum(sizes), 1.0)
            return per_sample * n
        from scipy.stats import linregress  # imported when first needed: it takes a second

        fit = linregress(sizes, costs)
        return max(0.0, float(fit.intercept + fit.slope * n))
