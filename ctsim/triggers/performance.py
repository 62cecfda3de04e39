"""Performance trigger: train when the active model's accuracy on the incoming data falls below what it
reached on held-out data of its own training period.

Modyn's ``PerformanceTrigger`` decides on the accuracy of each arriving batch, with a static floor
(``min_accuracy``), a dynamic threshold over past accuracies (``trigger/rule=quantile`` or ``rolling``
on the error rate) or the avoidable misclassifications since the last trigger (``misclassifications``).
ctsim's default is a statistical test against a **reference chosen on purpose**: the accuracy the
active model reaches on the held-out (test) samples from the time span of its training set, measured
once per generation. It fires when a batch's accuracy is significantly below that reference
(one-sided Fisher exact test, ``scipy.stats.fisher_exact``, p < 0.01).

**Why that reference.** It says what the model can do on the data it was trained for, so it does not
move with the data the model meets afterwards. A reference taken from the model's own first batches
(this trigger before) goes blind after a retrain on mostly stale data: the weak model's first accuracy
becomes the bar, and a later change cannot fall below it. Against its training period's held-out
accuracy, a model trained on stale data is below its bar at once, and fires again; one trained on
the new data sets a high bar again. A static floor needs the attainable accuracy known in advance, and
Modyn's dynamic thresholds (a rolling average of past accuracies) drift down while a model stays
weak. The held-out samples are those the stream keeps out of training (``stream.test_fraction``)
whose times lie within the span of the training set and whose labels have arrived (``label_delay``):
no future data. Where a training period holds fewer than ``min_samples`` of them (e.g.
``test_fraction: 0``), the model's first scored batches are its reference, as before, and the reason
says so.

**Labels.** Predictions are made when a batch arrives, by the model active then; its labels arrive
``label_delay`` arrival batches later, and the batch is scored when they do (batches predicted by a
replaced model are dropped). With ``estimate: true`` the trigger does not wait for labels: it scores
each batch on arrival by its *estimated* accuracy, the mean of the model's top-class probability
(confidence-based performance estimation, as NannyML's CBPE; exact for a calibrated model), against the
same estimate on the held-out reference, with a one-sided Welch t-test (``scipy.stats.ttest_ind``). The
estimate depends on the inputs only: it sees changes that make the model unsure, never a change of
p(y|x) alone (the same inputs, new labels), which only labels can show.

**A model at chance.** A reference says nothing when the model never learned: the first model,
trained on the first ``min_samples`` samples to arrive, can sit at chance, and so can its reference;
nothing then falls significantly below it, and the pipeline would keep that model for ever (on the
full portraits stream it did: one trigger, accuracy as ``never``). So with labels (``estimate:
false``, no ``min_accuracy``), a model whose reference accuracy is not significantly above the share
of the reference's most frequent label (what always answering that label scores; one-sided binomial
test, ``scipy.stats.binomtest``, p < 0.05) is retrained at its first scored pool (``at_chance:
true``, the default). A generation that learned is not affected; a weak one with a small reference
(20 held-out samples need 15 right against a 50/50 label split) may be retrained; on data no model
can learn it fires at every pool of ``min_samples`` samples, which the trigger counts show. A
reference whose samples all carry one label cannot tell, and the rule stands aside.

A batch with fewer than ``min_samples`` samples is pooled with the next ones before it is scored.
The first model is trained at the end of the first slice by which ``min_samples`` samples have
arrived.
"""

from __future__ import annotations

import math
import warnings

import torch

from ctsim.triggers.base import TriggerContext, Want
from ctsim.triggers.detectors import Result
from ctsim.triggers.rules import PValue, Rule
from ctsim.validation import ConfigError, check, is_int, is_number

CHANCE_ALPHA = 0.05  # a model is at chance unless its reference accuracy beats the most frequent label's
# share at this level (one-sided binomial test)


class PerformanceTrigger:
    """Fires when the active model's accuracy on arriving batches falls below its held-out accuracy.

    Args:
        rule: the decision on (error rate, p-value) of each scored batch against the reference (default:
            p < 0.01).
        min_accuracy: a static floor: fire when a batch's accuracy is below it (replaces ``rule``).
        misclassifications: fire when avoidable misclassifications since the last trigger exceed this
            count (Modyn's criterion; replaces ``rule``). Avoidable: beyond the reference error rate.
        label_delay: arrival batches until a batch's labels arrive.
        estimate: score batches on arrival by the model's confidence instead of waiting for labels.
        min_samples: the smallest pool of samples that is scored, and the fewest held-out samples that
            make a reference.
        at_chance: retrain a model whose reference accuracy is not significantly above the share of the
            reference's most frequent label (with labels, and without ``min_accuracy``).

    >>> t = PerformanceTrigger(min_samples=10)
    >>> t._score([torch.ones(10)])  # no held-out samples (a bare test): the first batch is the reference
    >>> t._score([torch.tensor([1.0] * 3 + [0.0] * 7)])
    'performance: accuracy 0.3 against 1 on its first batches, p 0.00155'
    """

    def __init__(
        self,
        rule: Rule | None = None,
        min_accuracy: float | None = None,
        misclassifications: int | None = None,
        label_delay: int = 0,
        estimate: bool = False,
        min_samples: int = 20,
        at_chance: bool = True,
    ):
        ConfigError.raise_all(
            [
                check(
                    "min_accuracy",
                    min_accuracy,
                    min_accuracy is None or (is_number(min_accuracy) and 0 < min_accuracy <= 1),
                    "null or a number in (0, 1]",
                ),
                check(
                    "misclassifications",
                    misclassifications,
                    misclassifications is None or (is_int(misclassifications) and misclassifications >= 1),
                    "null or an integer ≥ 1",
                ),
                check("label_delay", label_delay, is_int(label_delay) and label_delay >= 0, "an integer ≥ 0"),
                check("estimate", estimate, isinstance(estimate, bool), "true or false"),
                check("min_samples", min_samples, is_int(min_samples) and min_samples >= 1, "an integer ≥ 1"),
                check("at_chance", at_chance, isinstance(at_chance, bool), "true or false"),
                check(
                    "min_accuracy",
                    min_accuracy,
                    min_accuracy is None or misclassifications is None,
                    "null when misclassifications is set (one criterion at a time)",
                ),
            ]
        )
        self.rule = rule if rule is not None else PValue(alpha=0.01)
        self.min_accuracy, self.misclassifications = min_accuracy, misclassifications
        self.label_delay, self.estimate, self.min_samples = label_delay, estimate, min_samples
        self.at_chance = at_chance
        self._generation: int | None = None
        self._held_out: torch.Tensor | None = None  # the reference's keys (None: too few held out)
        self._reference: torch.Tensor | None = None  # per-sample correctness (or confidence) there
        self._at_chance: str | None = None  # the reason to retrain, where the reference is at chance
        self._waiting: list[tuple[torch.Tensor, torch.Tensor]] = []  # (keys, predictions) awaiting labels
        self._pending: list[torch.Tensor] = []  # scored samples not decided on yet (too few)
        self._pending_labels: list[torch.Tensor] = []  # their labels (none with estimate)
        self._avoidable = 0.0

    @property
    def _needs(self) -> frozenset[str]:
        return frozenset({"logits"} if self.estimate else {"predictions"})

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        if ctx.active is None:
            return {}
        self._follow(ctx)
        wants = {"batch": Want(ctx.batch.keys, self._needs)}
        if self._reference is None and self._held_out is not None:
            wants["reference"] = Want(self._held_out, self._needs)  # once per generation
        return wants

    def observe(self, ctx: TriggerContext) -> str | None:
        if ctx.active is None:  # the first model: at the end of the first slice with min_samples samples
            ready = ctx.batch.end_of_slice and len(ctx.since_trigger) >= self.min_samples
            return "performance: initial model" if ready else None
        self._follow(ctx)
        if "reference" in ctx.signals and self._held_out is not None:
            self._reference = self._scores(ctx, self._held_out, ctx.signals["reference"])
            self._at_chance = self._judge(_labels(ctx, self._held_out), "held out")
        out = ctx.signals.get("batch")
        if out is None:
            return None
        if self.estimate:
            return self._score([self._scores(ctx, ctx.batch.keys, out)])
        self._waiting.append((ctx.batch.keys, out["predictions"]))
        labelled, labels = [], []
        while len(self._waiting) > self.label_delay:
            keys, predictions = self._waiting.pop(0)
            labelled.append(self._scores(ctx, keys, {"predictions": predictions}))
            labels.append(_labels(ctx, keys))
        return self._score(labelled, labels) if labelled else None

    def _follow(self, ctx: TriggerContext) -> None:
        """On a new active model: forget the old one's batches, find the new one's held-out samples."""
        if self._generation == ctx.active.generation:
            return
        self._generation = ctx.active.generation
        self._waiting, self._pending, self._reference, self._avoidable = [], [], None, 0.0
        self._pending_labels, self._at_chance = [], None
        delay = 0 if self.estimate else self.label_delay
        self._held_out = _held_out(ctx, ctx.active.keys, self.min_samples, delay)

    def _scores(self, ctx: TriggerContext, keys: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sample: right or not (1.0 / 0.0), or with ``estimate`` the top-class probability."""
        if self.estimate:
            return out["logits"].float().softmax(-1).max(-1).values.cpu().double()
        return (out["predictions"].cpu() == _labels(ctx, keys)).double()

    def _score(self, scored: list[torch.Tensor], labels: list[torch.Tensor] | None = None) -> str | None:
        """Add (estimated) per-sample correctness (and the samples' labels, where known); decide once at
        least ``min_samples`` are pooled."""
        self._pending += scored
        self._pending_labels += labels or []
        if sum(len(s) for s in self._pending) < self.min_samples:
            return None
        current, self._pending = torch.cat(self._pending), []
        pooled_labels, self._pending_labels = self._pending_labels, []
        right, n = float(current.sum()), len(current)
        accuracy = right / n
        if self._reference is None:  # no held-out reference: the model's first scored batches are
            self._reference = current
            self._held_out = None
            if pooled_labels:
                self._at_chance = self._judge(torch.cat(pooled_labels), "on its first batches")
            return self._at_chance
        if self._at_chance is not None:
            return self._at_chance
        expected = float(self._reference.mean())
        if self.misclassifications is not None:
            self._avoidable += (n - right) - (1 - expected) * n
            if self._avoidable > self.misclassifications:
                count = f"{self._avoidable:.0f} avoidable misclassifications"
                return f"performance: {count} > {self.misclassifications}"
            return None
        if self.min_accuracy is not None:
            return (
                f"performance: accuracy {accuracy:.3g} < {self.min_accuracy:g}"
                if accuracy < self.min_accuracy
                else None
            )
        p = _p_below(self._reference, current, self.estimate)
        if self.rule.decide(Result(distance=1 - accuracy, p_value=p)):
            what = "estimated accuracy" if self.estimate else "accuracy"
            where = "held out" if self._held_out is not None else "on its first batches"
            return f"performance: {what} {accuracy:.3g} against {expected:.3g} {where}, p {p:.3g}"
        return None

    def _judge(self, labels: torch.Tensor, where: str) -> str | None:
        """Once per reference: the reason to retrain a model no better than always answering the
        reference's most frequent label (``labels``), else None (see "A model at chance")."""
        if not self.at_chance or self.estimate or self.min_accuracy is not None:
            return None
        chance = float(torch.unique(labels, return_counts=True)[1].max()) / len(labels)
        if chance >= 1.0:  # one label only: accuracy cannot tell a model from always answering it
            return None
        from scipy import stats

        right, n = round(float(self._reference.sum())), len(self._reference)
        p = float(stats.binomtest(right, n, chance, alternative="greater").pvalue)
        if p < CHANCE_ALPHA:
            return None
        return (
            f"performance: the model is at chance, accuracy {right / n:.3g} {where} against "
            f"{chance:.3g} for always answering the most frequent label (p {p:.3g})"
        )


def _labels(ctx: TriggerContext, keys: torch.Tensor) -> torch.Tensor:
    return ctx.y[keys.to(ctx.y.device)].cpu()


def _held_out(ctx: TriggerContext, trained: torch.Tensor, fewest: int, delay: int) -> torch.Tensor | None:
    """The stream's held-out samples whose times lie within the span of ``trained`` and whose labels have
    arrived (``delay`` arrival batches after theirs); None when fewer than ``fewest``."""
    stream = ctx.stream
    known = ctx.batch.index - delay
    if stream is None or known < 0 or not bool(stream.is_test.any()):
        return None
    times = stream.time[trained]
    until = min(float(times.max()), float(stream.time[stream.batches[known].keys].max()))
    test = stream.is_test.nonzero().squeeze(1)
    inside = test[(stream.time[test] >= times.min()) & (stream.time[test] <= until)]
    return inside if len(inside) >= fewest else None


def _p_below(reference: torch.Tensor, current: torch.Tensor, estimate: bool) -> float:
    """One-sided p-value of "the current mean is not below the reference mean"."""
    from scipy import stats  # imported when first needed: it takes a second

    if estimate:  # confidences: Welch's t-test (constant samples give NaN: no evidence)
        with warnings.catch_warnings():  # scipy warns on (nearly) constant samples; NaN covers them
            warnings.simplefilter("ignore", RuntimeWarning)
            test = stats.ttest_ind(reference.numpy(), current.numpy(), equal_var=False, alternative="greater")
        return 1.0 if math.isnan(test.pvalue) else float(test.pvalue)
    right, n = round(float(reference.sum())), len(reference)
    now, m = round(float(current.sum())), len(current)
    return float(stats.fisher_exact([[right, n - right], [now, m - now]], alternative="greater").pvalue)
