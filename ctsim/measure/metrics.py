"""Continual-learning metrics of one pipeline's accuracy matrix, and the run's ``metrics`` table.

Each function takes the accuracy matrix ``R`` (generation × slice, float64, NaN where a slice has no
test data) and ``trained``: for each generation, in order, the slice in which its training data ended
(``generations.trigger_slice``). Generation ``g`` is "task" ``g`` and its own slice is ``trained[g]``;
``R[g, trained[g]]`` is its accuracy on the test split of the slice it was trained through. Cells that
are NaN are left out of every mean; a metric with nothing to average is NaN.

* :func:`bwt`, :func:`fwt`: backward and forward transfer (Lopez-Paz & Ranzato, 2017, "Gradient
  Episodic Memory for Continual Learning");
* :func:`forgetting`: average forgetting (Chaudhry et al., 2018, "Riemannian Walk for Incremental
  Learning");
* :func:`eval_fix`, :func:`eval_stream`: Wild-Time's two evaluation protocols (Yao et al., 2022);
* :func:`metrics_table`: all of them for every pipeline and seed of a run (``metrics.parquet``).

The composite accuracy (the active model per slice, Modyn's) is in the ``cost`` table, not here.

>>> R = torch.tensor([[0.9, 0.6, 0.5], [0.8, 0.9, 0.7], [0.7, 0.8, 0.9]], dtype=torch.float64)
>>> round(bwt(R, [0, 1, 2]), 3), round(forgetting(R, [0, 1, 2]), 3), round(eval_stream(R, [0, 1, 2], k=1), 3)
(-0.15, 0.15, 0.65)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import torch

DEFAULT_K = 5
"""Eval-Stream's default horizon: each generation is scored on the 5 slices after its own (five years on
portraits), long enough to see a model age, short enough that most generations of a stream have them."""


METRICS_SCHEMA = {  # the run's metrics.parquet
    "pipeline": pl.String,
    "seed": pl.Int64,
    "bwt": pl.Float64,
    "fwt": pl.Float64,
    "forgetting": pl.Float64,
    "eval_fix_split": pl.Int64,
    "eval_fix_id": pl.Float64,
    "eval_fix_ood": pl.Float64,
    "eval_fix_worst": pl.Float64,
    "eval_stream_k": pl.Int64,
    "eval_stream": pl.Float64,
}


def bwt(R: torch.Tensor, trained: Sequence[int]) -> float:
    """Backward transfer: how much training on later data changed accuracy on earlier tasks.

    ``BWT = mean over g < G−1 of R[G−1, trained[g]] − R[g, trained[g]]``: the last generation's accuracy on
    each earlier generation's own slice, minus that generation's own. Negative means forgetting. NaN when
    ``G < 2``.

    >>> R = torch.tensor([[0.9, 0.6], [0.7, 0.8]], dtype=torch.float64)
    >>> round(bwt(R, [0, 1]), 3)  # 0.7 − 0.9
    -0.2
    """
    _check(R, trained)
    last = R.shape[0] - 1
    if last < 1:
        return math.nan
    own = torch.tensor(trained[:last])
    return nanmean(R[last, own] - R[torch.arange(last), own])


def fwt(R: torch.Tensor, trained: Sequence[int], baseline: Sequence[float] | torch.Tensor) -> float:
    """Forward transfer: how well each generation's predecessor does on the new generation's slice,
    above a baseline.

    ``FWT = mean over g ≥ 1 of R[g−1, trained[g]] − baseline[trained[g]]``. NaN when ``G < 2``.

    ``baseline`` (one value per slice): Lopez-Paz & Ranzato use a randomly initialised model's accuracy.
    ctsim does not evaluate one, so :func:`metrics_table` passes chance level, ``1 / num_classes`` on
    every slice: what an untrained model scores in expectation on balanced classes. On imbalanced slices
    an untrained model may score above or below it, so read FWT as "above chance".

    >>> R = torch.tensor([[0.9, 0.6], [0.7, 0.8]], dtype=torch.float64)
    >>> round(fwt(R, [0, 1], [0.5, 0.5]), 3)  # 0.6 − 0.5
    0.1
    """
    _check(R, trained)
    baseline = torch.as_tensor(baseline, dtype=torch.float64)
    if baseline.shape != (R.shape[1],):
        raise ValueError(
            f"baseline has shape {tuple(baseline.shape)}: it needs one value per slice, ({R.shape[1]},)"
        )
    if R.shape[0] < 2:
        return math.nan
    own = torch.tensor(trained[1:])
    return nanmean(R[torch.arange(R.shape[0] - 1), own] - baseline[own])


def forgetting(R: torch.Tensor, trained: Sequence[int]) -> float:
    """Average forgetting (Chaudhry et al., 2018): the best accuracy an earlier generation reached on an
    earlier task's slice, minus the last generation's.

    ``F = mean over j of (max over l < G−1 of R[l, j]) − R[G−1, j]``, over the distinct slices
    ``j = trained[g]`` for ``g < G−1`` (a slice trained on twice counts once). NaN when ``G < 2``.

    >>> R = torch.tensor([[0.9, 0.6], [0.7, 0.8]], dtype=torch.float64)
    >>> round(forgetting(R, [0, 1]), 3)  # 0.9 − 0.7
    0.2
    """
    _check(R, trained)
    last = R.shape[0] - 1
    if last < 1:
        return math.nan
    slices = torch.tensor(sorted(set(trained[:last])))
    earlier = R[:last, slices]
    best = torch.where(earlier.isnan(), -math.inf, earlier).max(0).values
    best = torch.where(earlier.isnan().all(0), math.nan, best)
    return nanmean(best - R[last, slices])


@dataclass(frozen=True)
class EvalFix:
    """Wild-Time's Eval-Fix on one pipeline: the model as of ``split``, in and out of distribution."""

    split: int  # slices ≤ split are in distribution, later ones out of distribution
    generation: int | None  # the row of R evaluated; None when no generation was trained by ``split``
    id: float  # mean accuracy on the test splits of slices ≤ split
    ood: float  # mean accuracy on slices > split
    worst: float  # lowest accuracy on a slice > split


def default_split(num_slices: int) -> int:
    """The middle slice, ``S // 2 − 1``: the first half of the stream in distribution, the rest out of it
    (Wild-Time splits its datasets at a fixed timestamp in the same way; for portraits' 84 years it is
    slice 41, 1971).

    >>> default_split(84), default_split(5)
    (41, 1)
    """
    return num_slices // 2 - 1


def eval_fix(R: torch.Tensor, trained: Sequence[int], split: int | None = None) -> EvalFix:
    """Wild-Time's Eval-Fix: train on the slices up to ``split``, test on every later one.

    The model is the latest generation trained through a slice ``≤ split`` (the pipeline's model as of
    then, where Wild-Time trains one model on all of that data). ``id`` is its mean accuracy on slices
    ``≤ split`` (their held-out test splits), ``ood`` its mean on slices ``> split`` and ``worst`` its
    lowest one there. ``split`` defaults to :func:`default_split`; it must leave at least one slice out
    of distribution.

    >>> R = torch.tensor([[0.9, 0.6, 0.5], [0.8, 0.9, 0.7], [0.7, 0.8, 0.9]], dtype=torch.float64)
    >>> e = eval_fix(R, [0, 1, 2], split=1)  # generation 1: ID (0.8 + 0.9) / 2, OOD 0.7
    >>> e.generation, round(e.id, 3), round(e.ood, 3), round(e.worst, 3)
    (1, 0.85, 0.7, 0.7)
    """
    _check(R, trained)
    split = default_split(R.shape[1]) if split is None else split
    check_split(split, R.shape[1])
    before = [g for g, t in enumerate(trained) if t <= split]
    if not before:
        return EvalFix(split, None, math.nan, math.nan, math.nan)
    g = before[-1]
    ood = R[g, split + 1 :]
    ood = ood[~ood.isnan()]
    worst = float(ood.min()) if ood.numel() else math.nan
    return EvalFix(split, g, nanmean(R[g, : split + 1]), nanmean(ood), worst)


def check_split(split: int, num_slices: int) -> None:
    """Raise a ValueError unless ``split`` leaves slices on both sides: ``0 ≤ split ≤ S − 2``."""
    if not isinstance(split, int) or isinstance(split, bool) or not 0 <= split <= num_slices - 2:
        raise ValueError(
            f"Invalid split: {split!r}. Eval-Fix needs slices on both sides of it: the stream has "
            f"{num_slices} slice(s), so split must be an integer in 0..{num_slices - 2} "
            f"(default {default_split(num_slices)}, the middle slice)"
        )


def eval_stream(R: torch.Tensor, trained: Sequence[int], k: int = DEFAULT_K) -> float:
    """Wild-Time's Eval-Stream: each generation's mean accuracy on the ``k`` slices after its own, then
    the mean over generations.

    For generation ``g`` the slices are ``trained[g] + 1 … trained[g] + k`` that exist and have test
    data; a generation with none (trained on the stream's last slice) is left out. Every generation
    counts once, so a stretch of slices with many triggers weighs more.

    >>> R = torch.tensor([[0.9, 0.6, 0.4], [0.8, 0.9, 0.7]], dtype=torch.float64)
    >>> round(eval_stream(R, [0, 1], k=2), 3)  # generation 0: (0.6 + 0.4) / 2, generation 1: 0.7
    0.6
    """
    _check(R, trained)
    check_k(k)
    means = []
    for g, t in enumerate(trained):
        ahead = R[g, t + 1 : t + 1 + k]
        if not ahead.isnan().all():  # also when empty
            means.append(nanmean(ahead))
    return sum(means) / len(means) if means else math.nan


def check_k(k: int) -> None:
    """Raise a ValueError unless ``k`` is a whole number of slices, at least 1."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(
            f"Invalid k: {k!r}. Eval-Stream needs k ≥ 1, the number of slices after each generation's "
            f"own to score it on (default {DEFAULT_K})"
        )


def metrics_table(
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    num_classes: int,
    split: int | None = None,
    k: int = DEFAULT_K,
) -> pl.DataFrame:
    """The ``metrics`` table: one row per pipeline and seed of ``generations`` (METRICS_SCHEMA), from the
    accuracy rows of ``evals``.

    FWT's baseline is chance level, ``1 / num_classes`` (see :func:`fwt`); ``split`` defaults to
    :func:`default_split` of the stream's slices and ``k`` to :data:`DEFAULT_K`. A metric with nothing to
    average is null, as are all of a pipeline whose every generation went non-finite (as in ``cost``).
    Eval-Fix is null on a stream of one slice when ``split`` is not given.
    """
    num_slices = int(evals["slice"].max()) + 1 if evals.height else 0
    matrices = []
    for (pipeline, seed), gens in generations.group_by(["pipeline", "seed"], maintain_order=True):
        failed = "status" in gens.columns and bool((gens["status"] != "ok").all())
        R, trained = (None, None) if failed else pipeline_matrix(evals, generations, pipeline, seed)
        matrices.append((pipeline, seed, R, trained))
    return metrics_of(matrices, num_slices, num_classes, split, k)


def metrics_of(
    matrices: Sequence[tuple[str, int, torch.Tensor | None, Sequence[int] | None]],
    num_slices: int,
    num_classes: int,
    split: int | None = None,
    k: int = DEFAULT_K,
) -> pl.DataFrame:
    """The ``metrics`` table from each pipeline's ``(name, seed, R, trained)`` (``R`` None: every
    generation went non-finite, so all its metrics are null); see :func:`metrics_table`."""
    check_k(k)
    if split is not None:
        check_split(split, num_slices)
    elif num_slices >= 2:
        split = default_split(num_slices)
    chance = torch.full((num_slices,), 1 / num_classes, dtype=torch.float64)
    rows = []
    for pipeline, seed, R, trained in matrices:
        row = {"pipeline": pipeline, "seed": seed, "eval_fix_split": split, "eval_stream_k": k}
        if R is None:
            rows.append(row)
            continue
        row |= {"bwt": bwt(R, trained), "fwt": fwt(R, trained, chance), "forgetting": forgetting(R, trained)}
        if split is not None:
            fix = eval_fix(R, trained, split)
            row |= {"eval_fix_id": fix.id, "eval_fix_ood": fix.ood, "eval_fix_worst": fix.worst}
        rows.append(row | {"eval_stream": eval_stream(R, trained, k)})
    frame = pl.DataFrame(rows, schema=METRICS_SCHEMA)
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def _check(R: torch.Tensor, trained: Sequence[int]) -> None:
    if R.ndim != 2 or len(trained) != R.shape[0]:
        raise ValueError(
            f"R has shape {tuple(R.shape)} and trained has {len(trained)} value(s): R must be "
            "generation × slice, with one trained slice per generation"
        )


def nanmean(t: torch.Tensor) -> float:
    """The mean of the values that are not NaN (NaN when none is). The values are gathered into a new
    tensor first, so the sum's order, and its rounding, do not depend on where ``t`` lies in memory."""
    t = t[~t.isnan()]
    return float(t.mean()) if t.numel() else math.nan


def pipeline_matrix(
    evals: pl.DataFrame, generations: pl.DataFrame, pipeline: str, seed: int, metric: str = "accuracy"
) -> tuple[torch.Tensor, list[int]]:
    """One pipeline's (generations × slices) matrix from a run's tables, and its training slices."""
    ev = evals.filter(
        (pl.col("pipeline") == pipeline) & (pl.col("seed") == seed) & (pl.col("metric") == metric)
    )
    wide = ev.pivot(on="slice", index="generation", values="value", sort_columns=True).sort("generation")
    gens = generations.filter((pl.col("pipeline") == pipeline) & (pl.col("seed") == seed)).sort("generation")
    values = wide.drop("generation").to_numpy().astype(float)
    return torch.tensor(values), gens["trigger_slice"].to_list()
