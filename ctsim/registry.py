"""The registry: a run's results as polars tables, written as parquet, queryable with SQL.

Tables (columns documented in the README, "Outputs"):

* ``evals``: one row per pipeline × seed × generation × evaluation slice × metric;
* ``generations``: one row per trained generation (trigger, training set, cost, parent, checkpoint);
* ``cost``: one row per pipeline and seed (cost and composite accuracy side by side);
* ``lineage``: the sample keys each generation was trained on;
* ``quality``: one row per pipeline and seed: trigger quality against the dataset's abrupt change
  points (detection delay, misses, false alarms per 50 stable slices) and incorporation latency
  (:mod:`ctsim.quality`);
* ``skipped``: one row per trigger that trained nothing, because its selection was empty.

Writes never replace an existing file: a run directory belongs to one run. The one exception is
``status.json`` (``running``, ``finished``, ``interrupted`` or ``failed``), which the run updates.

>>> import polars as pl
>>> frames = {"cost": pl.DataFrame({"pipeline": ["a", "b"], "composite_accuracy": [0.8, 0.9]})}
>>> query("SELECT pipeline FROM cost ORDER BY composite_accuracy DESC LIMIT 1", frames)["pipeline"].to_list()
['b']
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import torch

from ctsim.cost import flops_per_sample
from ctsim.evaluation import active_generations, composite
from ctsim.quality import PipelineTriggers, quality_table
from ctsim.simulation import Generation, SimulationResult
from ctsim.stream import ArrivalBatch

TABLES = ("evals", "generations", "cost", "lineage", "quality", "skipped")
OPTIONAL = ("skipped",)  # runs made before it existed have none: read as empty
METRICS = ("accuracy", "macro_f1")
STATUS = "status.json"


def build_tables(
    result: SimulationResult, checkpoints: Mapping[tuple[int, int], str] | None = None
) -> dict[str, pl.DataFrame]:
    """All tables of a run. ``checkpoints`` maps (pipeline index, generation) to a checkpoint path."""
    checkpoints = checkpoints or {}
    evals, active = _evals(result)
    return {
        "evals": evals,
        "generations": _generations(result, checkpoints),
        "cost": _cost(result, active),
        "lineage": _lineage(result),
        "quality": _quality(result),
        "skipped": _skipped(result),
    }


def _skipped(result: SimulationResult) -> pl.DataFrame:
    """Triggers that trained nothing because their selection was empty."""
    rows = [
        {**_trigger_columns(result, s.pipeline, s.batch, s.time, s.reason), "why": s.why}
        for s in result.skipped
    ]
    return pl.DataFrame(rows, schema=SKIPPED_SCHEMA)


def _trigger_columns(result: SimulationResult, p: int, batch: ArrivalBatch, time: float, reason: str) -> dict:
    """Which pipeline a trigger fired in, on which batch, when and why (generations and skipped)."""
    pipeline = result.pipelines[p]
    return {
        "pipeline": pipeline.name,
        "seed": pipeline.seed,
        "trigger_batch": batch.index,
        "trigger_slice": batch.slice,
        "trigger_label": result.stream.slice_labels[batch.slice],
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


def _active_per_pipeline(result: SimulationResult) -> dict[int, list[int | None]]:
    """Per pipeline, the row (into ``result.generations``) of each slice's active generation."""
    rows: dict[int, list[int]] = {}
    for row, gen in enumerate(result.generations):
        rows.setdefault(gen.pipeline, []).append(row)
    active = {}
    for p in range(len(result.pipelines)):
        own = rows.get(p, [])
        by_gen = active_generations([result.generations[r].slice for r in own], result.stream.num_slices)
        active[p] = [None if g is None else own[g] for g in by_gen]
    return active


def _evals(result: SimulationResult) -> tuple[pl.DataFrame, dict[int, list[int | None]]]:
    stream, ev = result.stream, result.evaluation
    active = _active_per_pipeline(result)
    num_slices = stream.num_slices
    frames = []
    for row, gen in enumerate(result.generations):
        pipeline = result.pipelines[gen.pipeline]
        is_active = [active[gen.pipeline][s] == row for s in range(num_slices)]
        for metric, matrix in (("accuracy", ev.accuracy), ("macro_f1", ev.macro_f1)):
            frames.append(
                pl.DataFrame(
                    {
                        "pipeline": [pipeline.name] * num_slices,
                        "seed": [pipeline.seed] * num_slices,
                        "generation": [gen.index] * num_slices,
                        "slice": list(range(num_slices)),
                        "slice_label": stream.slice_labels,
                        "metric": [metric] * num_slices,
                        "value": matrix[row].tolist(),
                        "n": ev.n.tolist(),
                        "active": is_active,
                    },
                    schema=EVALS_SCHEMA,
                )
            )
    evals = pl.concat(frames) if frames else pl.DataFrame(schema=EVALS_SCHEMA)
    return evals.with_columns(pl.col("value").fill_nan(None)), active


EVALS_SCHEMA = {
    "pipeline": pl.String,
    "seed": pl.Int64,
    "generation": pl.Int64,
    "slice": pl.Int64,
    "slice_label": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "n": pl.Int64,
    "active": pl.Boolean,
}


def _generations(result: SimulationResult, checkpoints: Mapping[tuple[int, int], str]) -> pl.DataFrame:
    stream = result.stream
    records = []
    for gen in result.generations:
        pipeline = result.pipelines[gen.pipeline]
        keys = gen.selection.keys
        slices = stream.slice[keys] if len(keys) else torch.empty(0, dtype=torch.long)
        flops = flops_per_sample(pipeline.model)
        records.append(
            {
                **_trigger_columns(result, gen.pipeline, gen.batch, gen.time, gen.reason),
                "generation": gen.index,
                "parent": gen.parent,
                "init": "finetune" if gen.parent is not None else "scratch",
                "n_selected": len(keys),
                "first_slice": int(slices.min()) if len(slices) else None,
                "last_slice": int(slices.max()) if len(slices) else None,
                "epochs": pipeline.train.epochs,
                "samples_trained": gen.trained.samples,
                "optimizer_steps": gen.trained.steps,
                "train_flops": gen.trained.samples * flops.train,
                "scored": scored(gen),
                "selection_flops": scored(gen) * flops.eval,
                "train_s": gen.trained.seconds,
                "final_loss": gen.trained.loss,
                "status": gen.trained.status,
                "checkpoint": checkpoints.get((gen.pipeline, gen.index)),
            }
        )
    return pl.DataFrame(records, schema=GENERATIONS_SCHEMA)


GENERATIONS_SCHEMA = {
    "pipeline": pl.String,
    "seed": pl.Int64,
    "generation": pl.Int64,
    "parent": pl.Int64,
    "trigger_batch": pl.Int64,
    "trigger_slice": pl.Int64,
    "trigger_label": pl.String,
    "trigger_time": pl.Float64,
    "trigger_reason": pl.String,
    "init": pl.String,
    "n_selected": pl.Int64,
    "first_slice": pl.Int64,
    "last_slice": pl.Int64,
    "epochs": pl.Int64,
    "samples_trained": pl.Int64,
    "optimizer_steps": pl.Int64,
    "train_flops": pl.Int64,
    "scored": pl.Int64,
    "selection_flops": pl.Int64,
    "train_s": pl.Float64,
    "final_loss": pl.Float64,
    "status": pl.String,
    "checkpoint": pl.String,
}

SKIPPED_SCHEMA = {  # the trigger's columns, as in generations, and why nothing was trained
    **{k: v for k, v in GENERATIONS_SCHEMA.items() if k in ("pipeline", "seed") or k.startswith("trigger_")},
    "why": pl.String,
}


def _cost(result: SimulationResult, active: dict[int, list[int | None]]) -> pl.DataFrame:
    ev = result.evaluation
    test_samples = int(ev.n.sum())
    records = []
    for p, pipeline in enumerate(result.pipelines):
        own = [g for g in result.generations if g.pipeline == p]
        seconds = result.seconds[p]
        acc = composite(ev.accuracy, active[p], ev.n)
        f1 = composite(ev.macro_f1, active[p], ev.n)
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
    composite_columns = ["composite_accuracy", "composite_accuracy_weighted", "composite_macro_f1"]
    return frame.with_columns(pl.when(~untrained).then(pl.col(c)).alias(c) for c in composite_columns)


COST_SCHEMA = {
    "pipeline": pl.String,
    "seed": pl.Int64,
    "triggers": pl.Int64,
    "samples_trained": pl.Int64,
    "optimizer_steps": pl.Int64,
    "train_flops": pl.Int64,
    "eval_flops": pl.Int64,
    "selection_flops": pl.Int64,
    "skipped": pl.Int64,
    "trigger_s": pl.Float64,
    "selection_s": pl.Float64,
    "train_s": pl.Float64,
    "eval_s": pl.Float64,
    "total_s": pl.Float64,
    "composite_accuracy": pl.Float64,
    "composite_accuracy_weighted": pl.Float64,
    "composite_macro_f1": pl.Float64,
    "covered_slices": pl.Int64,
    "nonfinite_generations": pl.Int64,
    "model": pl.String,
    "engine": pl.String,
    "device": pl.String,
}


def scored(gen: Generation) -> int:
    """Samples a generation's selection scored: its candidates (sample-then-batch) and every batch
    sample scored during training (batch-then-sample). One forward pass each: ``eval`` FLOPs."""
    return gen.selection.scored + gen.trained.scored


def _lineage(result: SimulationResult) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "pipeline": [result.pipelines[g.pipeline].name for g in result.generations],
            "seed": [result.pipelines[g.pipeline].seed for g in result.generations],
            "generation": [g.index for g in result.generations],
            "keys": [g.selection.keys.tolist() for g in result.generations],
        },
        schema={"pipeline": pl.String, "seed": pl.Int64, "generation": pl.Int64, "keys": pl.List(pl.UInt32)},
    )


def write_new(path: Path, write: callable) -> None:  # type: ignore[valid-type]
    """Write a file that must not exist yet, atomically (a temp file renamed into place)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists: it belongs to another run and is left untouched")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_tables(tables: Mapping[str, pl.DataFrame], out_dir: Path) -> list[Path]:
    paths = []
    for name, frame in tables.items():
        path = out_dir / f"{name}.parquet"
        write_new(path, frame.write_parquet)
        paths.append(path)
    return paths


def write_status(out_dir: Path, status: str, **fields: object) -> None:
    """Write ``status.json`` (replacing the last one, atomically): where the run is, and when."""
    path = out_dir / STATUS
    record = read_status(out_dir) or {"started": _now()}
    record.update(fields, status=status, updated=_now())
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{STATUS}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def read_status(run_dir: str | Path) -> dict | None:
    """The run's ``status.json``, or None where there is none (or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load(run_dir: str | Path) -> dict[str, pl.LazyFrame]:
    """The tables of one run directory, as lazy frames."""
    run_dir = Path(run_dir)
    missing = _missing(run_dir)
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a ctsim run directory: missing {', '.join(missing)}.parquet"
        )
    return {
        t: pl.scan_parquet(path) if (path := run_dir / f"{t}.parquet").exists() else _empty(t) for t in TABLES
    }


def _missing(run_dir: Path) -> list[str]:
    return [t for t in TABLES if t not in OPTIONAL and not (run_dir / f"{t}.parquet").exists()]


def _empty(table: str) -> pl.LazyFrame:
    return pl.DataFrame(schema={"skipped": SKIPPED_SCHEMA}[table]).lazy()


def load_many(root: str | Path = "results/runs") -> dict[str, pl.LazyFrame]:
    """The tables of every finished run under ``root``, concatenated, with a ``run`` column (the directory).

    Run folders that are not finished (``status.json`` says running, interrupted or failed, or tables
    are missing) are left out, with one warning naming them.
    """
    root = Path(root)
    dirs = sorted(
        {p.parent for p in root.rglob("status.json")} | {p.parent for p in root.rglob("evals.parquet")}
    )
    complete, skipped = [], []
    for d in dirs:
        status = (read_status(d) or {}).get("status", "finished")  # runs from before status.json
        missing = _missing(d)
        if status == "finished" and not missing:
            complete.append(d)
        else:
            skipped.append(f"{d} ({status}{', no ' + ', '.join(missing) if missing else ''})")
    if skipped:
        warnings.warn(f"left out {len(skipped)} unfinished run(s): {'; '.join(skipped)}", stacklevel=2)
    if not complete:
        raise FileNotFoundError(f"no finished ctsim runs under {root}")
    tables: dict[str, list[pl.LazyFrame]] = {t: [] for t in TABLES}
    for d in complete:
        for t, frame in load(d).items():
            tables[t].append(frame.with_columns(pl.lit(str(d)).alias("run")))
    return {t: pl.concat(frames, how="diagonal_relaxed") for t, frames in tables.items()}


def query(sql: str, tables: Mapping[str, pl.DataFrame | pl.LazyFrame]) -> pl.DataFrame:
    """Run SQL over named tables (e.g. from :func:`load` or :func:`load_many`) with polars."""
    return pl.SQLContext(dict(tables)).execute(sql).collect()
