"""Decision rules: turn a detector's sequence of results into fire / don't fire.

Each rule is a small class with one decision method, ``decide(result) -> bool``, which also records
the result (a resumed run replays the stream, so a rule's history is rebuilt as it was). Every rule
takes ``warmup``: its first ``warmup`` decisions only record, never fire.
``uses_p_value`` says whether a rule reads the p-value: the drift trigger runs a permutation test
only for rules that do (and, for the others, once it fires, for the reason it gives).

* :class:`Threshold`, :class:`PValue`: static (distance above a value, p-value below alpha).
* :class:`DynamicQuantile`, :class:`DynamicRollingAverage`: Modyn's dynamic thresholds, relative
  to the distances seen before. They never fire on an empty history (the first decision), and a
  fire does not reset the history: the drifted distances become part of the baseline, as in Modyn.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ctsim.triggers.detectors import Result
from ctsim.validation import ConfigError, Problem, check, is_int, is_number, non_negative_number, positive_int


class Rule(Protocol):
    def decide(self, result: Result) -> bool: ...


def _warmup_problem(warmup: object) -> Problem | None:
    return check("warmup", warmup, is_int(warmup) and warmup >= 0, "an integer ≥ 0")


class Threshold:
    """Fires when the distance is above ``value`` (Modyn's static threshold).

    The right value depends on the detector and the features: calibrate it on a stretch without
    drift, or use :class:`DynamicQuantile`.

    Args:
        value: the largest distance that does not fire (≥ 0).
        warmup: first decisions that only record.

    >>> rule = Threshold(value=0.5, warmup=1)
    >>> [rule.decide(Result(d, None)) for d in [0.9, 0.4, 0.5, 0.6]]  # the first is warm-up
    [False, False, False, True]
    """

    uses_p_value = False

    def __init__(self, value: float, warmup: int = 0):
        ConfigError.raise_all([non_negative_number("value", value), _warmup_problem(warmup)])
        self.value, self.warmup = value, warmup
        self.seen = 0  # decisions made

    def decide(self, result: Result) -> bool:
        self.seen += 1
        return self.seen > self.warmup and result.distance > self.value


class PValue:
    """Fires when the p-value is below ``alpha``: about ``alpha`` false alarms per decision without drift.

    Args:
        alpha: the significance level, in (0, 1); 0.01 as in ``conf/trigger/rule/pvalue.yaml``.
        warmup: first decisions that only record.

    >>> PValue().alpha
    0.01
    >>> rule = PValue(alpha=0.05)
    >>> [rule.decide(Result(0.0, p)) for p in [0.2, 0.01, 0.05]]
    [False, True, False]
    """

    uses_p_value = True

    def __init__(self, alpha: float = 0.01, warmup: int = 0):
        ConfigError.raise_all(
            [
                check("alpha", alpha, is_number(alpha) and 0 < alpha < 1, "a number in (0, 1)"),
                _warmup_problem(warmup),
            ]
        )
        self.alpha, self.warmup = alpha, warmup
        self.seen = 0  # decisions made

    def decide(self, result: Result) -> bool:
        if result.p_value is None:
            raise ValueError(
                "pvalue rule: the detector gave no p-value; give it permutations > 0, or use another rule"
            )
        self.seen += 1
        return self.seen > self.warmup and result.p_value < self.alpha


class DynamicQuantile:
    """Fires when the distance is above the ``quantile`` of the last ``window`` distances before it.

    Modyn's ``DynamicQuantileThreshold``. The quantile is numpy's (linear interpolation);
    ``quantile: 1`` fires on a distance above all of the window. The new distance joins the history
    after the decision, fire or not. Never fires on an empty history.

    Args:
        quantile: in (0, 1].
        window: past distances the threshold is taken from (≥ 1).
        warmup: first decisions that only record.

    >>> rule = DynamicQuantile(quantile=1.0, window=2)
    >>> [rule.decide(Result(d, None)) for d in [5.0, 1.0, 2.0, 3.0, 2.5]]
    [False, False, False, True, False]
    """

    uses_p_value = False

    def __init__(self, quantile: float = 0.95, window: int = 10, warmup: int = 0):
        ConfigError.raise_all(
            [
                check("quantile", quantile, is_number(quantile) and 0 < quantile <= 1, "a number in (0, 1]"),
                positive_int("window", window),
                _warmup_problem(warmup),
            ]
        )
        self.quantile, self.window, self.warmup = quantile, window, warmup
        self.seen = 0  # decisions made
        self.history: list[float] = []  # the last `window` distances

    def decide(self, result: Result) -> bool:
        fire = (
            self.seen >= self.warmup
            and bool(self.history)
            and result.distance > float(np.quantile(self.history, self.quantile))
        )
        self.seen += 1
        self.history = [*self.history, float(result.distance)][-self.window :]
        return fire


class DynamicRollingAverage:
    """Fires when the distance exceeds the mean of the last ``window`` distances by more than ``deviation``.

    Modyn's ``DynamicRollingAverageThreshold``. Relative by default: the margin is ``deviation ·
    |mean|`` (the absolute value keeps the margin ≥ 0 for detectors whose distance may be slightly
    negative, as unbiased MMD); ``absolute: true`` makes it ``deviation``. The new distance joins the
    history after the decision, fire or not. Never fires on an empty history.

    Args:
        window: past distances averaged (≥ 1).
        deviation: the margin above the mean, relative (a fraction) or absolute (≥ 0).
        absolute: whether ``deviation`` is absolute.
        warmup: first decisions that only record.

    >>> rule = DynamicRollingAverage(window=2, deviation=0.5)
    >>> [rule.decide(Result(d, None)) for d in [1.0, 1.2, 1.7, 2.0]]  # 1.7 > 1.1 · 1.5; 2.0 < 1.45 · 1.5
    [False, False, True, False]
    """

    uses_p_value = False

    def __init__(self, window: int = 10, deviation: float = 0.2, absolute: bool = False, warmup: int = 0):
        ConfigError.raise_all(
            [
                positive_int("window", window),
                non_negative_number("deviation", deviation),
                check("absolute", absolute, isinstance(absolute, bool), "true or false"),
                _warmup_problem(warmup),
            ]
        )
        self.window, self.deviation, self.absolute, self.warmup = window, deviation, absolute, warmup
        self.seen = 0  # decisions made
        self.history: list[float] = []  # the last `window` distances

    def decide(self, result: Result) -> bool:
        fire = False
        if self.seen >= self.warmup and self.history:
            mean = sum(self.history) / len(self.history)
            margin = self.deviation if self.absolute else self.deviation * abs(mean)
            fire = result.distance - mean > margin
        self.seen += 1
        self.history = [*self.history, float(result.distance)][-self.window :]
        return fire


RULES: dict[str, type] = {
    "threshold": Threshold,
    "pvalue": PValue,
    "quantile": DynamicQuantile,
    "rolling": DynamicRollingAverage,
}


def make_rule(name: str, **options: object) -> Rule:
    """The rule called ``name`` in configs, built with ``options``.

    >>> make_rule("pvalue", alpha=0.01).alpha
    0.01
    """
    if name not in RULES:
        raise ConfigError([Problem("rule", name, "one of " + ", ".join(RULES))])
    return RULES[name](**options)
