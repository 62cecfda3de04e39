"""Which pipelines the data can tell apart: paired tests against the best, Holm-corrected, as groups.

A comparison ranks pipelines by their mean composite accuracy, but with few seeds much of a gap
between two means can be noise. :func:`groups` says which gaps are not:

* **The reference** is the pipeline with the highest mean composite accuracy. Every other pipeline
  is tested against it with a paired test (below), and the p-values of that family are corrected
  for multiple comparisons with Holm's step-down method (:func:`holm`). Pipelines whose corrected
  p-value is above ``alpha`` (0.05) cannot be told from the best: they form **group 1**, with it.
  The pipelines left are grouped the same way around the best of them (group 2), and so on; each
  group is its own family of tests.
* **Pairing.** Every pipeline of a comparison is evaluated on the same held-out test samples: the
  train/test split is fixed by ``stream.split_seed``, not by the pipelines' seeds. A pipeline's
  seed fixes each generation's initial weights, data order and dropout masks
  (``job_seed(seed, generation)``) and the selection's random draws; so two pipelines with the same
  seed start from the same draws and differ by their policies. The unit of pairing is therefore
  **the seed** where both pipelines ran at least :data:`MIN_SEEDS` of the same seeds: a paired
  t-test of their per-seed composite accuracies (:func:`scipy.stats.ttest_1samp` of the
  differences, which is :func:`scipy.stats.ttest_rel`). With fewer shared
  seeds the unit is **the evaluation slice**: a Wilcoxon signed-rank test
  (:func:`scipy.stats.wilcoxon`) of the two pipelines' per-slice composite accuracy (the active
  model's accuracy on that slice, mean over the shared seeds, or over each one's own seeds where
  they share none). Both tests use only the slices both pipelines cover.
* **What the slice test sees.** It asks whether one pipeline is ahead on the slices consistently,
  given the models that were trained; it treats slices as replicates, and a model that was lucky
  in training stays lucky on every slice it serves. With one or two seeds it is the only test
  there is; the seed test, which sees training noise directly, takes over from :data:`MIN_SEEDS`.

>>> holm([0.01, 0.04, 0.03])  # three tests: the smallest times 3, the next times 2, the last once
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

ALPHA = 0.05  # family-wise error rate of each group's tests
MIN_SEEDS = 3  # shared seeds from which pairs are tested over seeds (training noise seen) rather than slices

GROUP_SCHEMA = {
    "pipeline": pl.String,
    "group": pl.Int64,  # 1: cannot be told from the best; 2: from the best of the rest; …
    "p_vs_best": pl.Float64,  # Holm-corrected p-value against the best pipeline (null for the best)
    "test": pl.String,  # the test against the best, and over how many pairs
}


@dataclass(frozen=True)
class Paired:
    """One paired test of ``pipeline`` against ``reference``: its p-value and what it paired."""

    p: float | None  # None: nothing to pair (no shared slice)
    test: str


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``p`` (same order): the family-wise error stays at most alpha."""
    order = sorted(range(len(p)), key=p.__getitem__)
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def per_slice(evals: pl.DataFrame) -> pl.DataFrame:
    """The composite accuracy per pipeline, seed and slice: the active model's accuracy where the
    slice has test samples (the cells a pipeline's composite accuracy is the mean of)."""
    return (
        evals.filter(pl.col("active") & (pl.col("metric") == "accuracy") & (pl.col("n") > 0))
        .drop_nulls("value")
        .filter(pl.col("value").is_not_nan())
        .select("pipeline", "seed", "slice", "value")
    )


def paired(cells: pl.DataFrame, reference: str, pipeline: str, min_seeds: int = MIN_SEEDS) -> Paired:
    """Test ``pipeline`` against ``reference`` on their per-slice accuracies (:func:`per_slice`)."""
    from scipy import stats

    a = cells.filter(pl.col("pipeline") == reference).drop("pipeline")
    b = cells.filter(pl.col("pipeline") == pipeline).drop("pipeline")
    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    if len(seeds) >= min_seeds:
        both = (
            a.join(b, on=["seed", "slice"], suffix="_b")
            .group_by("seed")
            .agg((pl.col("value") - pl.col("value_b")).mean().alias("d"))
        )
        d = both["d"].to_list()
        test = f"paired t, {len(d)} seeds"
        if len(d) < 2:
            return Paired(None, test)
        if max(d) == min(d):  # no spread: the t statistic is 0/0 or ±inf
            return Paired(1.0 if d[0] == 0 else 0.0, test)
        return Paired(float(stats.ttest_1samp(d, 0.0).pvalue), test)
    if seeds:
        a, b = a.filter(pl.col("seed").is_in(seeds)), b.filter(pl.col("seed").is_in(seeds))
    mean_a = a.group_by("slice").agg(pl.col("value").mean())
    mean_b = b.group_by("slice").agg(pl.col("value").mean())
    d = mean_a.join(mean_b, on="slice", suffix="_b").select(pl.col("value") - pl.col("value_b"))
    d = d.to_series().to_list()
    test = f"Wilcoxon, {len(d)} slices" + (f" × {len(seeds)} seed(s)" if seeds else ", seeds unpaired")
    if not d:
        return Paired(None, "no shared slice")
    if all(x == 0 for x in d):
        return Paired(1.0, test)
    return Paired(float(stats.wilcoxon(d).pvalue), test)


def groups(
    evals: pl.DataFrame, accuracy: dict[str, float | None], alpha: float = ALPHA, min_seeds: int = MIN_SEEDS
) -> pl.DataFrame:
    """Each pipeline's group (:data:`GROUP_SCHEMA`): see the module docstring.

    ``accuracy`` gives each pipeline's mean composite accuracy (the order within a group); pipelines
    without one get no group. A pipeline with no slice shared with its group's reference cannot be
    told from it and joins that group.
    """
    cells = per_slice(evals)
    known = [p for p, a in accuracy.items() if a is not None and not math.isnan(a)]
    left = sorted(known, key=lambda p: -accuracy[p])
    rows = {p: {"pipeline": p, "group": None, "p_vs_best": None, "test": "no accuracy"} for p in accuracy}
    group = 0
    while left:
        group += 1
        leader, others = left[0], left[1:]
        tests = [paired(cells, leader, p, min_seeds) for p in others]
        tested = [i for i, t in enumerate(tests) if t.p is not None]
        adjusted = dict(zip(tested, holm([tests[i].p for i in tested])))
        rows[leader]["group"] = group
        if group == 1:
            rows[leader]["test"] = "best"
        kept = []
        for i, (p, t) in enumerate(zip(others, tests)):
            if group == 1:
                rows[p].update(p_vs_best=adjusted.get(i), test=t.test)
            if i in adjusted and adjusted[i] <= alpha:
                kept.append(p)
            else:
                rows[p]["group"] = group
        left = kept
    return pl.DataFrame(list(rows.values()), schema=GROUP_SCHEMA)
