"""What a run folder holds: its files, the columns of its tables, and its ``status.json``.

Only polars and the standard library: reading runs back (:mod:`ctsim.registry.read`) starts at once,
without torch.

* ``<table>.parquet`` for each of :data:`TABLES`, once the run has finished;
* ``status.json``: the run's record (its row of the ``runs`` table), replaced as the run goes;
* ``journal/``: what an unfinished run has saved so far (:mod:`ctsim.registry.store`);
* ``checkpoints/<pipeline>/seed<S>/gen<K>.pt``: generation states (plain tensors);
* ``summary.md`` and ``plots/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

TABLES = ("evals", "generations", "cost", "lineage", "quality", "skipped", "metrics")
OPTIONAL = ("skipped", "metrics")  # runs made before they existed have none: read as empty
METRICS = ("accuracy", "macro_f1", "auroc")
STATUS = "status.json"
TABLE_VERSION = 2  # status.json's "tables": 2 adds the metrics table and AUROC; runs without the key are 1
JOURNAL = "journal"


def read_status(run_dir: str | Path) -> dict | None:
    """The run's ``status.json``, or None where there is none (or it cannot be read)."""
    try:
        record = json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


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
PARTIAL_EVALS_SCHEMA = {k: v for k, v in EVALS_SCHEMA.items() if k != "active"}

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
    "first_label": pl.String,  # the slices' labels (years, for portraits)
    "last_label": pl.String,
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
    "checkpoint_sha256": pl.String,
}

SKIPPED_SCHEMA = {  # the trigger's columns, as in generations, and why nothing was trained
    **{k: v for k, v in GENERATIONS_SCHEMA.items() if k in ("pipeline", "seed") or k.startswith("trigger_")},
    "why": pl.String,
}

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
    "composite_auroc": pl.Float64,
    "covered_slices": pl.Int64,
    "nonfinite_generations": pl.Int64,
    "model": pl.String,
    "engine": pl.String,
    "device": pl.String,
}

LINEAGE_SCHEMA = {"pipeline": pl.String, "seed": pl.Int64, "generation": pl.Int64, "keys": pl.List(pl.UInt32)}
