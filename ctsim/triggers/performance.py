"""Performance trigger: train when the active model's accuracy on the incoming labelled data falls.

Modyn's ``PerformanceTrigger``, with its decision criteria: a static accuracy threshold
(``min_accuracy``), a dynamic one (``trigger/rule=quantile`` or ``rolling`` on the error rate), or the
number of avoidable misclassifications since the last trigger (``misclassifications``). ctsim's
default is a statistical test: fire when the batch's accuracy is significantly below the accuracy the
active model had on the batches it has seen since it became active (one-sided Fisher exact test,
``scipy.stats.fisher_exact``, p < 0.01). The first observation after a new model only sets its
reference.

**Labels.** Predictions are made when a batch arrives, by the model active then; its labels arrive
``label_delay`` arrival batches later, and the batch is scored when they do (batches predicted by a
replaced model are dropped). With ``estimate: true`` the trigger does not wait for labels: it scores
each batch on arrival by its *estimated* accuracy, the mean of the model's top-class probability
(confidence-based performance estimation, as NannyML's CBPE; exact for a calibrated model).

A batch with fewer than ``min_samples`` samples is pooled with the next ones before it is scored.
The first model is trained at the end of the first slice by which ``min_samples`` samples have
arrived.
"""

from __future__ import annotations

import torch

from ctsim.config import ConfigError, check, is_int, is_number
from ctsim.triggers.base import TriggerContext, Want
from ctsim.triggers.detectors import Result
from ctsim.triggers.rules import PValue, Rule


class PerformanceTrigger:
    """Fires when the active model's accuracy on arriving labelled batches drops.

    Args:
        rule: the decision on (error rate, p-value) of each scored batch (default: p < 0.01).
        min_accuracy: a static threshold: fire when a batch's accuracy is below it (replaces ``rule``).
        misclassifications: fire when avoidable misclassifications since the last trigger exceed this
            count (Modyn's criterion; replaces ``rule``). Avoidable: beyond the error rate the model had
            on its first scored batch.
        label_delay: arrival batches until a batch's labels arrive.
        estimate: score batches on arrival by the model's confidence instead of waiting for labels.
        min_samples: the smallest pool of samples that is scored.

    >>> t = PerformanceTrigger(min_accuracy=0.7, min_samples=10)
    >>> t._score([torch.ones(10)])  # 10 of 10 right: the reference, no decision
    >>> t._score([torch.tensor([1.0] * 6 + [0.0] * 4)])
    'performance: accuracy 0.6 < 0.7'
    """

    def __init__(
        self,
        rule: Rule | None = None,
        min_accuracy: float | None = None,
        misclassifications: int | None = None,
        label_delay: int = 0,
        estimate: bool = False,
        min_samples: int = 20,
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
        self._generation: int | None = None
        self._waiting: list[tuple[torch.Tensor, torch.Tensor]] = []  # (keys, predictions) awaiting labels
        self._pool: list[float] = [0.0, 0.0]  # correct, scored samples this model (its reference)
        self._pending: list[float] = [0.0, 0.0]  # correct, samples not scored yet (too few)
        self._expected: float | None = None  # the model's first scored accuracy
        self._avoidable = 0.0

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        if ctx.active is None:
            return {}
        return {"batch": Want(ctx.batch.keys, frozenset({"logits"} if self.estimate else {"predictions"}))}

    def observe(self, ctx: TriggerContext) -> str | None:
        if ctx.active is None:  # the first model: at the end of the first slice with min_samples samples
            ready = ctx.batch.end_of_slice and len(ctx.since_trigger) >= self.min_samples
            return "performance: initial model" if ready else None
        if self._generation != ctx.active.generation:
            self._new_model(ctx.active.generation)
        out = ctx.signals.get("batch")
        if out is None:
            return None
        if self.estimate:
            confidence = out["logits"].float().softmax(-1).max(-1).values
            return self._score([confidence.cpu().double()])
        self._waiting.append((ctx.batch.keys, out["predictions"]))
        labelled = []
        while len(self._waiting) > self.label_delay:
            keys, predictions = self._waiting.pop(0)
            labelled.append((predictions.cpu() == ctx.y[keys.to(ctx.y.device)].cpu()).double())
        return self._score(labelled) if labelled else None

    def _new_model(self, generation: int) -> None:
        self._generation = generation
        self._waiting, self._pool, self._pending = [], [0.0, 0.0], [0.0, 0.0]
        self._expected, self._avoidable = None, 0.0

    def _score(self, scored: list[torch.Tensor]) -> str | None:
        """Add (estimated) per-sample correctness; decide once at least ``min_samples`` are pooled."""
        for correct in scored:
            self._pending[0] += float(correct.sum())
            self._pending[1] += len(correct)
        if self._pending[1] < self.min_samples:
            return None
        right, n = self._pending
        self._pending = [0.0, 0.0]
        accuracy = right / n
        if self._expected is None:  # the model's first scored batch: its reference
            self._expected = accuracy
            self._pool = [right, n]
            return None
        if self.misclassifications is not None:
            self._avoidable += (n - right) - (1 - self._expected) * n
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
        ref_right, ref_n = self._pool
        table = [[round(ref_right), round(ref_n - ref_right)], [round(right), round(n - right)]]
        from scipy.stats import fisher_exact  # imported when first needed: it takes a second

        p = float(fisher_exact(table, alternative="greater").pvalue)
        self._pool = [ref_right + right, ref_n + n]
        if self.rule.decide(Result(distance=1 - accuracy, p_value=p)):
            return f"performance: accuracy {accuracy:.3g} against {ref_right / ref_n:.3g} before, p {p:.3g}"
        return None

    def state_dict(self) -> dict:
        return {
            "generation": self._generation,
            "waiting": [(k.clone(), p.clone()) for k, p in self._waiting],
            "pool": list(self._pool),
            "pending": list(self._pending),
            "expected": self._expected,
            "avoidable": self._avoidable,
            "rule": self.rule.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._generation = state["generation"]
        self._waiting = [(k.clone(), p.clone()) for k, p in state["waiting"]]
        self._pool, self._pending = list(state["pool"]), list(state["pending"])
        self._expected, self._avoidable = state["expected"], state["avoidable"]
        self.rule.load_state_dict(state["rule"])
