"""The tables of a run and their schemas, built from a :class:`~ctsim.simulation.SimulationResult`.

Tables (columns documented in the README, "Outputs"):

* ``evals``: one row per pipeline × seed × generation × evaluation slice × metric;
* ``generations``: one row per trained generation (trigger, training set, cost, parent, checkpoint and
  its SHA-256);
* ``cost``: one row per pipeline and seed (cost and composite accuracy side by side);
* ``lineage``: the sample keys each generation was trained on;
* ``quality``: one row per pipeline and seed: trigger quality against the dataset's abrupt change
  points (detection delay, misses, false alarms per 50 stable slices) and incorporation latency
  (:mod:`ctsim.measure.quality`);
* ``skipped``: one row per trigger that trained nothing, because its selection was empty;
* ``metrics``: one row per pipeline and seed: continual-learning metrics of its accuracy matrix (BWT,
  FWT, forgetting, Wild-Time's Eval-Fix and Eval-Stream; :mod:`ctsim.measure.metrics`);
* ``runs``: one row per run, from its ``status.json`` (:mod:`ctsim.registry.store`).

The row builders (:func:`generation_rows`, :func:`lineage_rows`, :func:`eval_rows`) also write the
journal a run keeps as it goes, so a partial table has the columns of a finished one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl
import torch

from ctsim.measure.cost import flops_per_sample
from ctsim.measure.evaluation import active_generations, composite
from ctsim.measure.metrics import metrics_of
from ctsim.measure.quality import PipelineTriggers, quality_table
from ctsim.registry.layout import (
    COST_SCHEMA,
    EVALS_SCHEMA,
    GENERATIONS_SCHEMA,
    LINEAGE_SCHEMA,
    METRICS,
    PARTIAL_EVALS_SCHEMA,
    SKIPPED_SCHEMA,
)
from ctsim.simulation import Generation, Pipeline, SimulationResult
from ctsim.stream import ArrivalBatch, Stream

Saved = Mapping[tuple[int, int], tuple[str | None, str | None]]
"""Per (pipeline index, generation): the checkpoint's path (relative to the run folder; None when
``output.checkpoints`` did not keep it) and the SHA-256 of the state it held."""


def build_tables(result: SimulationResult, checkpoints: Saved | None = None) -> dict[str, pl.DataFrame]:
    """All tables of a run. ``checkpoints``: see :data:`Saved`."""
    checkpoints = checkpoints or {}
    evals, active = _evals(result)
    generations = generation_rows(result.stream, result.pipelines, result.generations, checkpoints)
    return {
        "evals": evals,
        "generations": generations,
        "cost": _cost(result, active),
        "lineage": lineage_rows(result.pipelines, result.generations),
        "quality": _quality(result),
        "skipped": _skipped(result),
        "metrics": _metrics(result),
    }


def _metrics(result: SimulationResult) -> pl.DataFrame:
    """Each pipeline's continual-learning metrics, from its accuracy matrix (by pipeline, not by name:
    the tables cannot tell apart pipelines that share a name and seed, the replay can)."""
    rows = _rows_per_pipeline(result)
    accuracy = result.evaluation.accuracy
    matrices = []
    for p, pipeline in enumerate(result.pipelines):
        own = rows.get(p, [])
        if not own:
            continue  # nothing trained: no matrix, no row (as in generations)
        failed = all(result.generations[r].trained.status != "ok" for r in own)
        trained = [result.generations[r].slice for r in own]
        matrices.append((pipeline.name, pipeline.seed, None if failed else accuracy[own], trained))
    return metrics_of(matrices, result.stream.num_slices, result.stream.num_classes)


def _skipped(result: SimulationResult) -> pl.DataFrame:
    """Triggers that trained nothing because their selection was empty."""
    rows = [
        {
            **_trigger_columns(result.stream, result.pipelines, s.pipeline, s.batch, s.time, s.reason),
            "why": s.why,
        }
        for s in result.skipped
    ]
    return pl.DataFrame(rows, schema=SKIPPED_SCHEMA)


def _trigger_columns(
    stream: Stream, pipelines: Sequence[Pipeline], p: int, batch: ArrivalBatch, time: float, reason: str
) -> dict:
    """Which pipeline a trigger fired in, on which batch, when and why (generations and skipped)."""
    pipeline = pipelines[p]
    return {
        "pipeline": pipeline.name,
        "seed": pipeline.seed,
        "trigger_batch": batch.index,
        "trigger_slice": batch.slice,
        "trigger_label": stream.slice_labels[batch.slice],
        "trigger_time": time,
        "trigger_reason": reason,
    }


def _quality(result: SimulationResult) -> pl.DataFrame:
    """Trigger quality against the stream's abrupt change points, and incorporation latency."""
    stream = result.stream
    rows = []
    for p, pipeline in enumerate(result.pipelines):
        own = [g for g in result.generations if g.pipeline == p]
        slices, times, keys = [g.slice for g in own], [g.time for g in own], [g.selection.keys for g in own]
        rows.append(PipelineTriggers(pipeline.name, pipeline.seed, slices, times, keys))
    return quality_table(rows, stream.num_slices, stream.change_points, stream.time, stream.arrival_order)


def _rows_per_pipeline(result: SimulationResult) -> dict[int, list[int]]:
    """Per pipeline index, the rows (into ``result.generations``) of its generations, in order."""
    rows: dict[int, list[int]] = {}
    for row, gen in enumerate(result.generations):
        rows.setdefault(gen.pipeline, []).append(row)
    return rows


def _active_per_pipeline(result: SimulationResult) -> dict[int, list[int | None]]:
    """Per pipeline, the row (into ``result.generations``) of each slice's active generation."""
    rows = _rows_per_pipeline(result)
    active = {}
    for p in range(len(result.pipelines)):
        own = rows.get(p, [])
        by_gen = active_generations([result.generations[r].slice for r in own], result.stream.num_slices)
        active[p] = [None if g is None else own[g] for g in by_gen]
    return active


def _evals(result: SimulationResult) -> tuple[pl.DataFrame, dict[int, list[int | None]]]:
    ev, gens = result.evaluation, result.generations
    active = _active_per_pipeline(result)
    evals = eval_rows(result.stream, result.pipelines, gens, ev.metrics, ev.n)
    # in eval_rows' order: generation, then metric, then slice
    flags = [
        active[g.pipeline][s] == row for row, g in enumerate(gens) for _ in METRICS for s in range(len(ev.n))
    ]
    return evals.with_columns(pl.Series("active", flags, dtype=pl.Boolean)).select(list(EVALS_SCHEMA)), active


def eval_rows(
    stream: Stream,
    pipelines: Sequence[Pipeline],
    gens: Sequence[Generation],
    metrics: Mapping[str, torch.Tensor],
    n: torch.Tensor,
) -> pl.DataFrame:
    """The evals rows of ``gens`` (rows of each of :data:`METRICS`' matrices, in order), without
    ``active``: which slices a generation serves is known only once the replay has ended. A missing
    value (no test data; for AUROC also a slice of one class) is null."""
    num_slices = len(n)
    frames = []
    for row, gen in enumerate(gens):
        pipeline = pipelines[gen.pipeline]
        for metric in METRICS:
            frames.append(
                pl.DataFrame(
                    {
                        "pipeline": [pipeline.name] * num_slices,
                        "seed": [pipeline.seed] * num_slices,
                        "generation": [gen.index] * num_slices,
                        "slice": list(range(num_slices)),
                        "slice_label": stream.slice_labels,
                        "metric": [metric] * num_slices,
                        "value": metrics[metric][row].tolist(),
                        "n": n.tolist(),
                    },
                    schema=PARTIAL_EVALS_SCHEMA,
                )
            )
    evals = pl.concat(frames) if frames else pl.DataFrame(schema=PARTIAL_EVALS_SCHEMA)
    return evals.with_columns(pl.col("value").fill_nan(None))


def generation_rows(
    stream: Stream, pipelines: Sequence[Pipeline], gens: Sequence[Generation], checkpoints: Saved
) -> pl.DataFrame:
    """The generations rows of ``gens``; ``checkpoints`` as in :data:`Saved`."""
    records = []
    for gen in gens:
        pipeline = pipelines[gen.pipeline]
        keys = gen.selection.keys
        slices = stream.slice[keys] if len(keys) else torch.empty(0, dtype=torch.long)
        flops = flops_per_sample(pipeline.model)
        path, sha = checkpoints.get((gen.pipeline, gen.index), (None, None))
        first, last = (int(slices.min()), int(slices.max())) if len(slices) else (None, None)
        records.append(
            {
                **_trigger_columns(stream, pipelines, gen.pipeline, gen.batch, gen.time, gen.reason),
                "generation": gen.index,
                "parent": gen.parent,
                "init": "finetune" if gen.parent is not None else "scratch",
                "n_selected": len(keys),
                "first_slice": first,
                "last_slice": last,
                "first_label": None if first is None else stream.slice_labels[first],
                "last_label": None if last is None else stream.slice_labels[last],
                "epochs": pipeline.train.epochs,
                "samples_trained": gen.trained.samples,
                "optimizer_steps": gen.trained.steps,
                "train_flops": gen.trained.samples * flops.train,
                "scored": scored(gen),
                "selection_flops": scored(gen) * flops.eval,
                "train_s": gen.trained.seconds,
                "final_loss": gen.trained.loss,
                "status": gen.trained.status,
                "checkpoint": path,
                "checkpoint_sha256": sha,
            }
        )
    return pl.DataFrame(records, schema=GENERATIONS_SCHEMA)


def _cost(result: SimulationResult, active: dict[int, list[int | None]]) -> pl.DataFrame:
    ev = result.evaluation
    test_samples = int(ev.n.sum())
    records = []
    for p, pipeline in enumerate(result.pipelines):
        own = [g for g in result.generations if g.pipeline == p]
        seconds = result.seconds[p]
        acc = composite(ev.accuracy, active[p], ev.n)
        f1 = composite(ev.macro_f1, active[p], ev.n)
        auroc = composite(ev.auroc, active[p], ev.n)
        flops = flops_per_sample(pipeline.model)
        records.append(
            {
                "pipeline": pipeline.name,
                "seed": pipeline.seed,
                "triggers": len(own),
                "samples_trained": sum(g.trained.samples for g in own),
                "optimizer_steps": sum(g.trained.steps for g in own),
                "train_flops": sum(g.trained.samples for g in own) * flops.train,
                "eval_flops": len(own) * test_samples * flops.eval,
                "selection_flops": sum(scored(g) for g in own) * flops.eval,
                "skipped": sum(s.pipeline == p for s in result.skipped),
                "trigger_s": seconds["trigger"],
                "selection_s": seconds["selection"],
                "train_s": seconds["train"],
                "eval_s": seconds["eval"],
                "total_s": sum(seconds.values()),
                "composite_accuracy": acc.mean,
                "composite_accuracy_weighted": acc.weighted_mean,
                "composite_macro_f1": f1.mean,
                "composite_auroc": auroc.mean,
                "covered_slices": acc.coverage,
                "nonfinite_generations": sum(g.trained.status != "ok" for g in own),
                "model": pipeline.model.name,
                "engine": result.engine,
                "device": result.device,
            }
        )
    frame = pl.DataFrame(records, schema=COST_SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))
    # A pipeline whose every generation went non-finite trained nothing: it has no accuracy to show.
    untrained = (pl.col("triggers") > 0) & (pl.col("nonfinite_generations") == pl.col("triggers"))
    composite_columns = [c for c in COST_SCHEMA if c.startswith("composite_")]
    return frame.with_columns(pl.when(~untrained).then(pl.col(c)).alias(c) for c in composite_columns)


def scored(gen: Generation) -> int:
    """Samples a generation's selection scored: its candidates (sample-then-batch) and every batch
    sample scored during training (batch-then-sample). One forward pass each: ``eval`` FLOPs."""
    return gen.selection.scored + gen.trained.scored


def lineage_rows(pipelines: Sequence[Pipeline], gens: Sequence[Generation]) -> pl.DataFrame:
    """The sample keys each of ``gens`` was trained on."""
    return pl.DataFrame(
        {
            "pipeline": [pipelines[g.pipeline].name for g in gens],
            "seed": [pipelines[g.pipeline].seed for g in gens],
            "generation": [g.index for g in gens],
            "keys": [g.selection.keys.tolist() for g in gens],
        },
        schema=LINEAGE_SCHEMA,
    )
