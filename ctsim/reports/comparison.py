"""What a comparison is made of: its runs, its merged tables, and its table's columns and cells.

Shared by :mod:`ctsim.reports.compare` (which builds it), :mod:`ctsim.reports.plots` and
:mod:`ctsim.reports.html` (which draw it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

PRICE_PER_HOUR = 2.0  # dollars per device-hour: an on-demand cloud GPU, roughly; --price-per-hour

SUMMARY_SCHEMA = {
    "pipeline": pl.String,
    "seeds": pl.Int64,
    "accuracy": pl.Float64,  # composite accuracy, mean over seeds
    "ci_low": pl.Float64,  # 95% t interval of that mean (null with one seed)
    "ci_high": pl.Float64,
    "accuracy_sd": pl.Float64,
    "macro_f1": pl.Float64,
    "auroc": pl.Float64,
    "triggers": pl.Float64,
    "samples": pl.Float64,  # samples trained (selected samples × epochs)
    "tflops": pl.Float64,  # training and selection
    "device_s": pl.Float64,  # trigger + selection + training seconds
    "cost_usd": pl.Float64,
    "incorporation_latency": pl.Float64,
    "regret": pl.Float64,
    "bwt": pl.Float64,
    "fwt": pl.Float64,
    "forgetting": pl.Float64,
    "eval_fix_id": pl.Float64,
    "eval_fix_ood": pl.Float64,
    "eval_fix_worst": pl.Float64,
    "eval_stream": pl.Float64,
}


@dataclass(frozen=True)
class Run:
    """One run folder as the comparison sees it."""

    path: Path
    status: str
    error: str | None
    overrides: tuple[str, ...]  # what makes its pipelines what they are (no hydra.*, no seeds)
    name: str  # the run's name (a run without variants names its one pipeline after it)
    data: tuple  # what its accuracies are measured on: data fingerprint, test split
    dataset: str
    version: int
    change_points: tuple[dict, ...]


@dataclass
class Comparison:
    """What :func:`gather` found: the finished runs' tables (pipelines relabelled) and what was left out."""

    runs: list[Run]
    left_out: list[tuple[str, str]]  # (folder, why): failed, interrupted or unfinished runs and jobs
    tables: dict[str, pl.DataFrame]
    labels: dict[tuple[str, str], str] = field(default_factory=dict)  # (run, pipeline) → label
    price_per_hour: float = PRICE_PER_HOUR
    candidates: str | None = None
    frontier: pl.DataFrame | None = None
    regret: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def change_points(self) -> list[dict]:
        return list(self.runs[0].change_points) if self.runs else []


COLUMNS = {  # summary column → (heading, format, help)
    "pipeline": ("pipeline", "{}", "the pipeline; runs of a sweep are told apart by their own overrides"),
    "seeds": ("seeds", "{}", "seeds compared"),
    "accuracy": (
        "accuracy",
        "{:.4f}",
        "composite accuracy (the active model on each slice), mean over seeds",
    ),
    "ci": ("95% CI", "", "Student's t interval of that mean over seeds"),
    "macro_f1": ("macro-F1", "{:.4f}", "composite macro-F1, mean over seeds"),
    "auroc": ("AUROC", "{:.4f}", "composite one-vs-rest AUROC, mean over seeds"),
    "triggers": ("triggers", "{:.1f}", "model generations trained"),
    "samples": ("samples", "{:,.0f}", "samples trained (selected × epochs)"),
    "tflops": ("TFLOPs", "{:.4f}", "training and selection FLOPs, 10¹²"),
    "device_s": ("device s", "{:.1f}", "trigger, selection and training seconds (evaluation left out)"),
    "cost_usd": ("cost $", "{:.4f}", "device-hours × the price per device-hour"),
    "incorporation_latency": ("latency", "{:.2f}", "incorporation latency: slices from arrival to training"),
    "regret": ("regret", "{:.4f}", "the hindsight-optimal frontier at this trigger count minus accuracy"),
    "bwt": ("BWT", "{:+.4f}", "backward transfer"),
    "fwt": ("FWT", "{:+.4f}", "forward transfer, against chance"),
    "forgetting": ("forgetting", "{:.4f}", "average forgetting"),
    "eval_fix_ood": ("Eval-Fix OOD", "{:.4f}", "Eval-Fix: mean accuracy after the split slice"),
    "eval_stream": ("Eval-Stream", "{:.4f}", "each generation's accuracy on the next slices"),
}


def cells(row: dict) -> dict[str, str]:
    """A summary row as the report shows it: column → text."""
    out = {}
    for key, (_, fmt, _) in COLUMNS.items():
        if key == "ci":
            low, high = row["ci_low"], row["ci_high"]
            out[key] = "–" if low is None else f"{low:.4f} – {high:.4f}"
            continue
        value = row[key]
        out[key] = (
            "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
        )
    return out
