"""Evaluation: every generation on every slice's test set, the active model, composite accuracy.

* The **accuracy matrix** of a pipeline is generation × evaluation slice (also for macro-F1 and AUROC).
* **AUROC** is one-vs-rest and macro-averaged over the classes present in a slice's test labels, with
  class scores the softmax of the logits in float64; NaN for a slice of fewer than two classes.
* The **active model** for slice ``s`` is the newest generation whose training data ended before
  ``s`` begins: a generation trained on a batch of slice ``t`` serves slices ``t+1, t+2, …`` until a
  newer one replaces it (Modyn's "currently active model"). Slices before the first generation have
  no active model.
* The **composite accuracy** of a pipeline is its active models' accuracy, slice by slice; its mean
  is taken over the slices that have an active model, unweighted and weighted by test-set size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctsim.engine.base import Engine, Predictions, State
from ctsim.models.base import ModelSpec
from ctsim.progress import bar, rate
from ctsim.stream import Stream

METRICS = ("accuracy", "macro_f1", "auroc")  # the evals table's (ctsim.registry.layout.METRICS)
Metrics = dict[str, torch.Tensor]
"""Each metric's (G, S) float64 matrix, by name (:data:`METRICS`)."""


@dataclass(frozen=True)
class Evaluation:
    """Metrics of every generation (rows) on every slice (columns); NaN where a slice has no test data."""

    accuracy: torch.Tensor  # (G, S) float64
    macro_f1: torch.Tensor  # (G, S) float64
    auroc: torch.Tensor  # (G, S) float64; NaN also where a slice's test labels hold fewer than 2 classes
    n: torch.Tensor  # (S,) test samples per slice
    seconds: torch.Tensor  # (G,) evaluation seconds attributed to each generation

    @property
    def metrics(self) -> Metrics:
        return {name: getattr(self, name) for name in METRICS}


def evaluate(
    engine: Engine,
    stream: Stream,
    models: Sequence[ModelSpec],
    states: Sequence[State],
    progress: bool = False,
    chunk: int | None = None,
    saved: Callable[[list[int]], tuple[Metrics, torch.Tensor] | None] | None = None,
    record: Callable[[list[int], Metrics, torch.Tensor, torch.Tensor], None] | None = None,
) -> Evaluation:
    """Predict with every state on every slice's test set, then score each slice.

    The test inputs of all slices go to the engine together and are shared by every model; models of
    one architecture go in one call, or in calls of ``chunk`` models each. After each call,
    ``record(rows, metrics, n, seconds)`` gets its results; before it, ``saved(rows)`` may answer
    ``(metrics, seconds)`` instead (a resumed run), and then the call is not made.
    """
    num_gen, num_slices = len(states), stream.num_slices
    keys = torch.cat(stream.test_keys) if stream.test_keys else torch.empty(0, dtype=torch.long)
    n = torch.tensor([len(k) for k in stream.test_keys])
    empty = torch.full((num_gen, num_slices), math.nan, dtype=torch.float64)
    metrics = {name: empty.clone() for name in METRICS}
    seconds = torch.zeros(num_gen, dtype=torch.float64)
    if num_gen == 0 or len(keys) == 0:
        return Evaluation(**metrics, n=n, seconds=seconds)
    x = stream.x[keys.to(stream.x.device)].to(engine.device)
    y, seg = stream.y[keys], stream.slice[keys]
    groups: dict[str, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(model.key, []).append(i)
    done = 0  # generations evaluated
    calls = [g[i : i + (chunk or len(g))] for g in groups.values() for i in range(0, len(g), chunk or len(g))]
    with bar(total=num_gen, enabled=progress, desc="evaluate") as evaluated:
        for rows in calls:
            found = saved(rows) if saved is not None else None
            if found is None:
                predicted = engine.predict(models[rows[0]], [states[r] for r in rows], x)
                scores = slice_metrics(predicted, y, seg, num_slices, stream.num_classes)
                secs = torch.tensor(predicted.seconds, dtype=torch.float64)
                if record is not None:
                    record(rows, scores, n, secs)
            else:
                scores, secs = found
            for name in METRICS:
                metrics[name][rows] = scores[name]
            seconds[rows] = secs
            done += len(rows)
            evaluated.update(len(rows))
            evaluated.set_postfix_str(rate(len(keys) * done, float(seconds.sum())))
    return Evaluation(**metrics, n=n, seconds=seconds)


def slice_metrics(
    predicted: Predictions, labels: torch.Tensor, seg: torch.Tensor, num_slices: int, num_classes: int
) -> Metrics:
    """Every metric of each model's predictions on each slice; ``seg`` gives samples' slices.

    AUROC ranks the class probabilities, the softmax of the logits in float64.
    """
    accuracy, macro_f1 = slice_scores(predicted.classes, labels, seg, num_slices, num_classes)
    probabilities = torch.softmax(predicted.logits.double(), dim=-1)
    auroc = slice_auroc(probabilities, labels, seg, num_slices)
    return {"accuracy": accuracy, "macro_f1": macro_f1, "auroc": auroc}


def slice_scores(
    preds: torch.Tensor, labels: torch.Tensor, seg: torch.Tensor, num_slices: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and macro-F1 of each row of ``preds`` (G, n) on each slice; ``seg`` gives samples' slices.

    >>> preds = torch.tensor([[0, 1, 1, 1]])
    >>> acc, f1 = slice_scores(preds, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]), 3, 2)
    >>> acc.tolist(), [round(v, 4) for v in f1[0, :2].tolist()]
    ([[1.0, 0.5, nan]], [1.0, 0.3333])
    """
    num_gen = preds.shape[0]
    counts = torch.bincount(seg, minlength=num_slices).double()
    correct = torch.zeros(num_gen, num_slices, dtype=torch.float64)
    correct.index_add_(1, seg, (preds == labels).double())
    accuracy = correct / counts  # NaN where a slice has no test samples

    p = torch.nn.functional.one_hot(preds, num_classes).bool()  # (G, n, C)
    t = torch.nn.functional.one_hot(labels, num_classes).bool().unsqueeze(0)

    def per_slice(hits: torch.Tensor) -> torch.Tensor:  # (G, n, C) → (G, S, C)
        return torch.zeros(num_gen, num_slices, num_classes, dtype=torch.float64).index_add_(
            1, seg, hits.double()
        )

    tp, fp, fn = per_slice(p & t), per_slice(p & ~t), per_slice(~p & t)
    present = (tp + fp + fn) > 0
    f1 = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 0.0)
    macro_f1 = f1.sum(2) / present.sum(2)
    return accuracy, macro_f1


def slice_auroc(
    scores: torch.Tensor, labels: torch.Tensor, seg: torch.Tensor, num_slices: int
) -> torch.Tensor:
    """One-vs-rest macro AUROC of each row of class ``scores`` (G, n, C) on each slice: (G, S).

    For each class present in a slice's labels, its AUROC is the Mann–Whitney statistic of its score on
    the slice's samples of that class against the others, ``(R₊ − n₊(n₊+1)/2) / (n₊·n₋)`` with ``R₊``
    the positives' rank sum (ties share their mean rank); the slice's value is the mean over those
    classes. NaN where the slice has fewer than two classes (or no samples), or a score is NaN.

    >>> p = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.5, 0.5])
    >>> scores = torch.stack([1 - p, p], dim=-1).unsqueeze(0)  # one model, two classes
    >>> slice_auroc(scores, torch.tensor([0, 0, 1, 1, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1]), 3)
    tensor([[0.7500,    nan,    nan]], dtype=torch.float64)
    """
    from scipy.stats import rankdata  # imported here: scipy.stats took 1.5 s to import (2 CPU cores)

    num_gen, _, num_classes = scores.shape
    out = torch.full((num_gen, num_slices), math.nan, dtype=torch.float64)
    values, y, where = scores.double().cpu().numpy(), labels.cpu().numpy(), seg.cpu().numpy()
    for s in range(num_slices):
        rows = np.flatnonzero(where == s)
        positive = y[rows, None] == np.arange(num_classes)  # (n_s, C)
        present = positive.any(0)
        if present.sum() < 2:
            continue
        positive = positive[:, present]
        n_pos = positive.sum(0)
        n_neg = len(rows) - n_pos
        ranks = rankdata(values[:, rows][:, :, present], axis=1)  # (G, n_s, classes present), over samples
        rank_sum = (ranks * positive).sum(1)
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        out[:, s] = torch.from_numpy(auroc.mean(1))
    return out


def f1_macro(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Macro-F1 of each row of ``preds`` (G, n) against ``labels`` (n,), over one set of samples.

    The mean over classes of ``2·TP / (2·TP + FP + FN)``, over the classes that occur in the labels or
    the predictions (as scikit-learn's ``f1_score(average="macro")`` with those labels).

    >>> f1_macro(torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]), torch.tensor([0, 0, 1, 1]), 2)
    tensor([1.0000, 0.3333], dtype=torch.float64)
    """
    p = torch.nn.functional.one_hot(preds, num_classes).bool()  # (G, n, C)
    t = torch.nn.functional.one_hot(labels, num_classes).bool().unsqueeze(0)
    tp = (p & t).sum(1).double()
    fp = (p & ~t).sum(1).double()
    fn = (~p & t).sum(1).double()
    present = (tp + fp + fn) > 0
    f1 = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 0.0)
    return f1.sum(1) / present.sum(1).clamp(min=1)


def active_generations(trained_slices: Sequence[int], num_slices: int) -> list[int | None]:
    """For each slice, the index of the active generation (None before the first one).

    ``trained_slices[g]`` is the slice in which generation ``g``'s training data ended.

    >>> active_generations([0, 2, 2, 5], num_slices=7)
    [None, 0, 0, 2, 2, 2, 3]
    """
    active: list[int | None] = []
    g = -1
    for s in range(num_slices):
        while g + 1 < len(trained_slices) and trained_slices[g + 1] < s:
            g += 1
        active.append(g if g >= 0 else None)
    return active


@dataclass(frozen=True)
class Composite:
    """A pipeline's active-model metric per slice, and its means."""

    per_slice: list[float]  # NaN where no model is active or the slice has no test data
    mean: float
    weighted_mean: float
    coverage: int  # slices with an active model and test data


def composite(matrix: torch.Tensor, active: Sequence[int | None], n: torch.Tensor) -> Composite:
    """Compose a (G, S) metric matrix along the active-model mapping.

    >>> m = torch.tensor([[0.9, 0.8, 0.5, 0.4], [0.6, 0.7, 0.9, 0.8]], dtype=torch.float64)
    >>> c = composite(m, [None, 0, 1, 1], torch.tensor([10, 10, 30, 10]))
    >>> c.per_slice[1:], round(c.mean, 4), round(c.weighted_mean, 4), c.coverage
    ([0.8, 0.9, 0.8], 0.8333, 0.86, 3)
    """
    values = [math.nan if g is None or n[s] == 0 else float(matrix[g, s]) for s, g in enumerate(active)]
    valid = [s for s, v in enumerate(values) if not math.isnan(v)]
    if not valid:
        return Composite(values, math.nan, math.nan, 0)
    weights = n[valid].double()
    vals = torch.tensor([values[s] for s in valid], dtype=torch.float64)
    return Composite(values, float(vals.mean()), float((vals * weights).sum() / weights.sum()), len(valid))
