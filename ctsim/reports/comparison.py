"""What a comparison is made of: its runs, its merged tables, and its table's columns and cells.

Shared by :mod:`ctsim.reports.compare` (which builds it), :mod:`ctsim.reports.plots` and
:mod:`ctsim.reports.html` (which draw it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ctsim.reports.significance import ALPHA, MIN_SEEDS

PRICE_PER_HOUR = 2.0  # dollars per device-hour: an on-demand cloud GPU, roughly; --price-per-hour

SUMMARY_SCHEMA = {
    "pipeline": pl.String,
    "seeds": pl.Int64,
    "accuracy": pl.Float64,  # composite accuracy, mean over seeds
    "ci_low": pl.Float64,  # 95% t interval of that mean (null with one seed), whole: reports cut it to [0, 1]
    "ci_high": pl.Float64,
    "accuracy_sd": pl.Float64,
    "group": pl.Int64,  # significance groups (ctsim.reports.significance): 1 cannot be told from the best
    "p_vs_best": pl.Float64,  # Holm-corrected p-value of the paired test against the best
    "test": pl.String,  # that test, and over how many pairs
    "covered_slices": pl.Float64,  # slices with an active model, mean over seeds
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
    config: dict = field(default_factory=dict, compare=False)  # status.json's config: run and pipelines


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
    oracle: str | None = None  # "exact" or "approximate": what the candidates make the frontier
    alpha: float = ALPHA  # family-wise error rate of the significance groups (ctsim.reports.significance)

    @property
    def change_points(self) -> list[dict]:
        return list(self.runs[0].change_points) if self.runs else []

    def run_lines(self) -> list[tuple[str, str]]:
        """Each compared run folder and what it ran: its overrides and its seeds (which the overrides that
        name pipelines leave out), sweep jobs in their order (``2`` before ``10``)."""
        cost = self.tables.get("cost")
        lines = []
        for r in sorted(self.runs, key=lambda r: natural_key(str(r.path))):
            seeds = [] if cost is None else sorted(cost.filter(pl.col("run") == str(r.path))["seed"].unique())
            said = " ".join(r.overrides) or "(no overrides)"
            lines.append((str(r.path), f"{said} · seed(s) {', '.join(map(str, seeds)) or '–'}"))
        return lines


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key that orders the numbers in ``text`` by value.

    >>> sorted(["sweep/10", "sweep/2", "sweep/1"], key=natural_key)
    ['sweep/1', 'sweep/2', 'sweep/10']
    """
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]


COLUMNS = {  # summary column → (heading, format, help)
    "pipeline": ("pipeline", "{}", "the pipeline; runs of a sweep are told apart by their own overrides"),
    "seeds": ("seeds", "{}", "seeds compared"),
    "accuracy": (
        "accuracy",
        "{:.4f}",
        "composite accuracy (the active model on each slice), mean over seeds",
    ),
    "ci": (
        "95% CI",
        "",
        "Student's t interval of that mean over seeds, cut to [0, 1] where it reaches past (compare.parquet "
        "keeps it whole)",
    ),
    "group": (
        "group",
        "{}",
        "pipelines the data cannot tell apart: 1 holds the best and every pipeline a paired test cannot "
        "tell from it (Holm-corrected, α 0.05); 2 the best of the rest and those tied with it; …",
    ),
    "p_vs_best": ("p vs best", "{:.2g}", "Holm-corrected p-value of the paired test against the best"),
    "test": ("test", "{}", "the paired test against the best: over seeds (t) or over slices (Wilcoxon)"),
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


def headings(comparison: Comparison) -> dict[str, tuple[str, str]]:
    """Each column's heading and help as this comparison shows them: the regret says whether its
    frontier is exact or approximate (:mod:`ctsim.reports.oracle`)."""
    out = {key: (name, desc) for key, (name, _, desc) in COLUMNS.items()}
    if comparison.oracle == "approximate":
        out["regret"] = (
            "regret (approximate)",
            "the approximate frontier at this trigger count minus accuracy: its candidates are not "
            "the models a sparser schedule would train, so it can be negative (see the notes)",
        )
    elif comparison.oracle == "exact":
        out["regret"] = (
            "regret (exact)",
            "the exact hindsight-optimal frontier at this trigger count minus accuracy",
        )
    return out


def cells(row: dict) -> dict[str, str]:
    """A summary row as the report shows it: column → text."""
    out = {}
    for key, (_, fmt, _) in COLUMNS.items():
        if key == "ci":
            low, high = row["ci_low"], row["ci_high"]
            out[key] = "–" if low is None else "{:.4f} – {:.4f}".format(*shown_interval(low, high))
            continue
        value = row[key]
        out[key] = (
            "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
        )
    return out


def shown_interval(low: float, high: float) -> tuple[float, float]:
    """A 95% interval of a mean accuracy as the reports show it: cut to [0, 1], where accuracy lies.

    A t interval over few seeds can reach past either end (over 2 seeds it is the mean ± 12.7 standard
    errors); the part outside holds no accuracy a pipeline could have, so the cut interval still holds
    the true mean as often. :func:`interval_notes` names the intervals that were cut.

    >>> shown_interval(-0.42, 2.12), shown_interval(0.61, 0.83)
    ((0.0, 1.0), (0.61, 0.83))
    """
    return max(low, 0.0), min(high, 1.0)


def interval_notes(table: pl.DataFrame) -> list[str]:
    """A note naming each pipeline whose 95% interval tells nothing: one over fewer than
    :data:`~ctsim.reports.significance.MIN_SEEDS` seeds (2 seeds: 1 degree of freedom), or one that
    reaches past [0, 1] and is shown cut (:func:`shown_interval`). Empty when there is none."""
    from scipy import stats

    named, few, cut = [], False, False
    for row in table.iter_rows(named=True):
        low, high = row["ci_low"], row["ci_high"]
        if low is None or high is None or math.isnan(low) or math.isnan(high):
            continue
        why = []
        if row["seeds"] < MIN_SEEDS:
            few = True
            why.append(f"{row['seeds']} seeds")
        if low < 0 or high > 1:
            cut = True
            why.append(f"its t interval, {low:.4f} to {high:.4f}, is shown cut to [0, 1]")
        if why:
            named.append(f"{row['pipeline']} ({'; '.join(why)})")
    if not named:
        return []
    said = [f"Intervals that tell nothing: {', '.join(named)}."]
    if few:
        said.append(
            "Over 2 seeds a 95% t interval has 1 degree of freedom: it is the mean ± "
            f"{stats.t.ppf(0.975, 1):.1f} standard errors, and the two seeds' spread is a single difference."
        )
    if cut:
        said.append("An interval that reaches past 0 or 1 is wider than accuracy's whole range on that side.")
    said.append(
        "Such an interval cannot tell pipelines apart: read the significance groups (their paired tests do "
        f"not use it), and run {MIN_SEEDS} or more seeds for intervals that can."
    )
    return [" ".join(said)]


def significance_note(table: pl.DataFrame, alpha: float = ALPHA) -> str:
    """What the groups say, in one paragraph (compare.md, report.html)."""
    best = table.filter(pl.col("test") == "best")
    if best.is_empty():
        return "No pipeline has an accuracy: no significance groups."
    tied = table.filter((pl.col("group") == 1) & (pl.col("test") != "best"))["pipeline"].to_list()
    name = best["pipeline"][0]
    said = (
        f"{len(tied)} pipeline(s) cannot be told from it: {', '.join(tied)}."
        if tied
        else "Every other pipeline is distinguishably below it."
    )
    return (
        f"Significance: the best mean accuracy is {name}'s. {said} Rows are sorted by group, then by "
        "accuracy; within a group the order is noise, not a ranking. Each pipeline is tested against its "
        f"group's best with a paired test: over seeds (paired t) where the two share at least {MIN_SEEDS} "
        "seeds (a seed fixes each generation's initial weights and data order; every pipeline is tested "
        "on the same held-out samples), else over the evaluation slices both cover (Wilcoxon signed-rank "
        f"of the per-slice composite accuracy); Holm-corrected per group, at α {alpha:g}."
    )


CHANCE_AUROC = 0.6  # a composite AUROC at or below this is near chance (0.5: ranks no better than a coin)


def chance_notes(table: pl.DataFrame) -> list[str]:
    """A note naming the pipelines whose models sit near chance: composite AUROC at most
    :data:`CHANCE_AUROC`. AUROC is 0.5 for a model that ranks classes no better than chance, however the
    classes are balanced, where accuracy can look good by predicting the commonest class.

    >>> rows = [{"pipeline": "a", "auroc": 0.52}, {"pipeline": "b", "auroc": 0.91}]
    >>> chance_notes(pl.DataFrame(rows))[0][:52]
    'Near chance: a (AUROC 0.52). A model no better than '
    >>> chance_notes(pl.DataFrame([{"pipeline": "b", "auroc": 0.91}]))
    []
    """
    near = [
        (row["pipeline"], row["auroc"])
        for row in table.iter_rows(named=True)
        if row["auroc"] is not None and not math.isnan(row["auroc"]) and row["auroc"] <= CHANCE_AUROC
    ]
    if not near:
        return []
    named = ", ".join(f"{p} (AUROC {a:.2f})" for p, a in near)
    every = len(near) == table.filter(pl.col("auroc").is_not_null()).height
    return [
        f"Near chance: {named}. A model no better than chance has AUROC 0.5, whatever the classes' "
        f"shares; at most {CHANCE_AUROC:g} its accuracy says little about the policy (it may be no more "
        "than the share of the commonest class): "
        + (
            "every pipeline here is, so this comparison ranks models that did not learn; train longer, "
            "with another learning rate or on more data first."
            if every
            else "check its training (learning rate, epochs, data) before reading its rank."
        )
    ]


def tie_notes(table: pl.DataFrame) -> list[str]:
    """A note when the comparison cannot rank its pipelines: two or more have an accuracy and the paired
    tests put every one of them in group 1, so each difference in the table is within the noise.

    >>> row = {"seeds": 3, "group": 1}
    >>> tie_notes(pl.DataFrame([{"pipeline": "a", **row}, {"pipeline": "b", **row}]))[0][:43]
    'No ranking: the paired tests cannot tell an'
    >>> tie_notes(pl.DataFrame([{"pipeline": "a", **row}, {"pipeline": "b", "seeds": 3, "group": 2}]))
    []
    """
    ranked = table.filter(pl.col("group").is_not_null())
    if ranked.height < 2 or (ranked["group"] != 1).any():
        return []
    seeds = int(ranked["seeds"].min())
    more = (
        f"run {MIN_SEEDS} or more seeds (the paired t-test over seeds needs them)"
        if seeds < MIN_SEEDS
        else "run more seeds"
    )
    return [
        f"No ranking: the paired tests cannot tell any of these {ranked.height} pipelines from the best "
        "(all are in group 1), so every difference in accuracy here is within the noise of the seeds "
        f"and slices. To tell them apart, {more}, or a longer or larger stream."
    ]


def coverage_notes(table: pl.DataFrame) -> list[str]:
    """A note for each pipeline whose accuracy covers fewer slices than another's: its accuracy is a
    mean over other, later slices (the console prints one line for all: ``summary.short_coverage``)."""
    most = table["covered_slices"].max()
    return [
        f"Coverage: {row['pipeline']}: its accuracy covers {row['covered_slices']:.3g} of the {most:.3g} "
        "slices others cover (no active model before its first generation); compare with care (the "
        "paired tests use only the slices both pipelines cover)."
        for row in table.iter_rows(named=True)
        if row["covered_slices"] is not None and row["covered_slices"] < most
    ]


def frontier_label(exact: bool, candidates: str) -> str:
    """What plots and tables call the frontier."""
    if exact:
        return f"hindsight-optimal frontier (exact; candidates {candidates})"
    return f"approximate frontier (candidates {candidates})"
