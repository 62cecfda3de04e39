"""Does a study's quick form predict its full size? Compare the two pipeline rankings.

    python experiments/validate_quick.py                  # portraits_triggers: run its quick form, compare
    python experiments/validate_quick.py --quick-run DIR  # a quick run already made (--wall, --cpu: times)
    python experiments/validate_quick.py --full-run DIR   # against a full run folder, not the report
    python experiments/validate_quick.py --study portraits_drift --full-run DIR --quick-run DIR
    python experiments/validate_quick.py --study portraits_selection --full-run DIR --quick-run DIR

The full-size side is a full run folder (per-seed composite accuracies), a comparison's
``compare.parquet`` (every study commits one: ``results/reference/<study>/comparison/compare.parquet``),
or, by default, the table of the study's committed full report (``results/reference/<study>/report.md``:
per pipeline the seeds, the mean composite accuracy and its sd). The quick side is a run folder of the
study's quick form (or its comparison's ``compare.parquet``); without one the script runs it
(``experiment=<study>_quick``) and records its wall and CPU time.

Checks, the targets of issue 23 (``yearly`` is the pipeline that trains every year, ``never`` the one
that trains once):

* Spearman's ρ ≥ 0.8 between the two rankings of the pipelines both have (mean composite accuracy);
* the quick ``yearly`` within 5 points of the full ``yearly``;
* the quick ``yearly`` − ``never`` ≥ 15 points, with non-overlapping 95% t intervals over seeds.

Beside them it reports how far the full study agrees with itself (:func:`replicate_rho`): the ρ between
two replicates of the full study drawn from its seeds' spread, the most a quick form can be expected to
reach.

The selection study trains every year in every pipeline: its reference pipeline is ``full`` (all of
each year's data) and it has no ``never``, so the third check does not apply to it. Its committed
report has no per-seed table, so it is validated against a full run folder or the committed
``comparison/compare.parquet`` (``--full-run``).

Writes ``results/reference/<study>/validation.md`` and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats
from study import REPO, Timing, commit, default_jobs, run_study

from ctsim.registry import load

# per study: the pipeline that trains every year on all its data and the one that never retrains
STUDIES: dict[str, tuple[str, str | None]] = {
    "portraits_triggers": ("time_1", "never"),
    "portraits_drift": ("yearly", "never"),
    "portraits_selection": ("full", None),
}
RHO_MIN, YEARLY_POINTS, GAP_POINTS = 0.8, 5.0, 15.0


@dataclass(frozen=True)
class Accuracy:
    """A pipeline's mean composite accuracy over ``seeds`` seeds, its sd and its 95% t interval."""

    mean: float
    sd: float | None
    seeds: int

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.seeds < 2 or self.sd is None or math.isnan(self.sd):
            return None
        half = stats.t.ppf(0.975, self.seeds - 1) * self.sd / math.sqrt(self.seeds)
        return self.mean - half, self.mean + half

    def __str__(self) -> str:
        ci = self.interval
        shown = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "– (one seed)"
        return f"{self.mean:.3f} | {'–' if self.sd is None else f'{self.sd:.3f}'} | {self.seeds} | {shown}"


def from_runs(run_dirs: list[Path]) -> dict[str, Accuracy]:
    """Per pipeline, from the cost tables of one or more run folders (e.g. one per seed); pipelines
    without an accuracy are left out."""
    cost = pl.concat([load(d)["cost"].collect() for d in run_dirs], how="diagonal_relaxed")
    cost = cost.filter(pl.col("composite_accuracy").is_not_null())
    table = cost.group_by("pipeline", maintain_order=True).agg(
        pl.col("composite_accuracy").mean().alias("mean"),
        pl.col("composite_accuracy").std().alias("sd"),
        pl.len().alias("seeds"),
    )
    return {r["pipeline"]: Accuracy(r["mean"], r["sd"], r["seeds"]) for r in table.iter_rows(named=True)}


def from_comparison(path: Path) -> dict[str, Accuracy]:
    """Per pipeline, from a comparison's ``compare.parquet`` (:mod:`ctsim.reports.compare`; every study
    commits one, ``results/reference/<study>/comparison[_quick]/``): seeds, accuracy and accuracy_sd."""
    frame = pl.read_parquet(path)
    missing = {"pipeline", "seeds", "accuracy", "accuracy_sd"} - set(frame.columns)
    if missing:
        raise SystemExit(
            f"{path}: no column(s) {sorted(missing)}; expected a compare.parquet of ctsim compare"
        )
    frame = frame.filter(pl.col("accuracy").is_not_null())
    return {
        r["pipeline"]: Accuracy(r["accuracy"], r["accuracy_sd"], r["seeds"])
        for r in frame.iter_rows(named=True)
    }


def accuracies(source: Path) -> dict[str, Accuracy]:
    """A run folder, a ``compare.parquet`` or a study report, whichever ``source`` is."""
    if source.suffix == ".parquet":
        return from_comparison(source)
    if source.suffix == ".md":
        return from_report(source)
    return from_runs([source])


def replicate_rho(
    full: dict[str, Accuracy], draws: int = 10_000, seed: int = 0
) -> tuple[float, float] | None:
    """How well the full study agrees with itself: Spearman's ρ between two independent replicates of it,
    each pipeline's mean drawn again as the measured mean plus its standard error (sd / √seeds) times a
    Student t variate with seeds − 1 degrees of freedom (as the t intervals, so that an sd from few seeds
    counts as uncertain). Returns the median ρ over ``draws`` pairs and the share of pairs with
    ρ ≥ ``RHO_MIN``; None where a pipeline has fewer than two seeds. A quick form as faithful as a second
    full study reaches about this ρ, so a target above it asks the quick form to agree with noise."""
    if len(full) < 3 or any(a.interval is None for a in full.values()):  # an sd needs two seeds
        return None
    mean = np.array([a.mean for a in full.values()])
    se = np.array([a.sd / math.sqrt(a.seeds) for a in full.values()])
    df = np.array([a.seeds - 1 for a in full.values()])
    rng = np.random.default_rng(seed)
    a, b = (stats.rankdata(mean + se * rng.standard_t(df, (draws, len(mean))), axis=1) for _ in range(2))
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    rho = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return float(np.median(rho)), float((rho >= RHO_MIN).mean())


def from_report(report: Path) -> dict[str, Accuracy]:
    """Per pipeline, from a study report's markdown table with columns pipeline, seeds, accuracy and
    accuracy_sd (as ``experiments/portraits_triggers.py`` writes them); '–' cells are left out."""
    rows = [line.strip().strip("|").split("|") for line in report.read_text().splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows if len(row) > 3]
    header = next((row for row in rows if {"pipeline", "seeds", "accuracy", "accuracy_sd"} <= set(row)), None)
    if header is None:
        raise SystemExit(
            f"{report}: no table with columns pipeline, seeds, accuracy, accuracy_sd; "
            "give the full run folder with --full-run DIR"
        )
    col = {name: header.index(name) for name in ("pipeline", "seeds", "accuracy", "accuracy_sd")}
    found = {}
    for row in rows[rows.index(header) + 1 :]:
        if set(row[col["accuracy"]]) <= set("-–") or row[col["accuracy"]] == "":
            continue
        sd = row[col["accuracy_sd"]]
        found[row[col["pipeline"]]] = Accuracy(
            float(row[col["accuracy"]]), None if sd in ("–", "") else float(sd), int(float(row[col["seeds"]]))
        )
    return found


@dataclass(frozen=True)
class TestDraw:
    """The test portraits behind a pipeline's composite accuracy in a quick run, and how far their draw
    alone moves it: the binomial sd of the mean over slices of per-slice accuracies (the split is fixed
    across seeds, so the seeds' interval does not show this)."""

    total: int
    fewest: int
    most: int
    sd: float

    def __str__(self) -> str:
        return (
            f"{self.total:,} test portraits ({self.fewest}-{self.most} per slice); their draw alone moves "
            f"the composite by ±{100 * self.sd:.1f} points (binomial sd), the same for every seed"
        )


def test_draw(run_dirs: list[Path], pipeline: str) -> TestDraw | None:
    """:class:`TestDraw` of ``pipeline``'s composite accuracy (its active cells), or None without them."""
    evals = pl.concat([load(d)["evals"].collect() for d in run_dirs], how="diagonal_relaxed")
    cells = evals.filter(
        (pl.col("pipeline") == pipeline) & (pl.col("metric") == "accuracy") & pl.col("active")
    )
    if cells.is_empty():
        return None
    per_slice = cells.group_by("slice").agg(pl.col("value").mean().alias("p"), pl.col("n").first())
    var = (per_slice["p"] * (1 - per_slice["p"]) / per_slice["n"]).sum() / per_slice.height**2
    n = per_slice["n"]
    return TestDraw(int(n.sum()), int(n.min()), int(n.max()), math.sqrt(var))


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def checks(
    quick: dict[str, Accuracy], full: dict[str, Accuracy], yearly: str, never: str | None
) -> list[Check]:
    """The three targets (two where the study has no ``never``); a pipeline missing on either side
    fails the checks that need it."""
    common = [p for p in full if p in quick]
    rho = stats.spearmanr([quick[p].mean for p in common], [full[p].mean for p in common]).statistic
    found = [
        Check(
            f"Spearman ρ ≥ {RHO_MIN}",
            len(common) >= 3 and rho >= RHO_MIN,
            f"ρ = {rho:.2f} over {len(common)} pipelines",
        )
    ]
    if yearly in quick and yearly in full:
        diff = 100 * (quick[yearly].mean - full[yearly].mean)
        found.append(
            Check(
                f"`{yearly}` within {YEARLY_POINTS:g} points of full",
                abs(diff) <= YEARLY_POINTS,
                f"{quick[yearly].mean:.3f} against {full[yearly].mean:.3f} ({diff:+.1f} points)",
            )
        )
    else:
        found.append(Check(f"`{yearly}` within {YEARLY_POINTS:g} points of full", False, "missing"))
    if never is None:
        return found
    if yearly in quick and never in quick:
        gap = 100 * (quick[yearly].mean - quick[never].mean)
        a, b = quick[yearly].interval, quick[never].interval
        apart = a is not None and b is not None and (a[0] > b[1] or b[0] > a[1])
        found.append(
            Check(
                f"`{yearly}` − `{never}` ≥ {GAP_POINTS:g} points, 95% intervals apart",
                gap >= GAP_POINTS and apart,
                f"{gap:+.1f} points; intervals "
                + (
                    "apart" if apart else "overlap or missing (one seed)" if a and b else "missing (one seed)"
                ),
            )
        )
    else:
        found.append(Check(f"`{yearly}` − `{never}` ≥ {GAP_POINTS:g} points", False, "missing"))
    return found


def resolved_pairs(quick: dict[str, Accuracy], full: dict[str, Accuracy]) -> tuple[int, int]:
    """Of the pipeline pairs whose full-size 95% intervals are apart, how many the quick form puts in
    the same order (by mean), and how many there are."""
    common = [p for p in full if p in quick]
    same = total = 0
    for i, a in enumerate(common):
        for b in common[i + 1 :]:
            ia, ib = full[a].interval, full[b].interval
            if ia is None or ib is None or not (ia[0] > ib[1] or ib[0] > ia[1]):
                continue
            total += 1
            same += (full[a].mean > full[b].mean) == (quick[a].mean > quick[b].mean)
    return same, total


def report(
    study: str,
    quick: dict[str, Accuracy],
    full: dict[str, Accuracy],
    sources: tuple[str, str],
    timing: Timing | None,
    draw: TestDraw | None = None,
    command: str | None = None,
) -> tuple[str, bool]:
    yearly, never = STUDIES[study]
    results = checks(quick, full, yearly, never)
    same, total = resolved_pairs(quick, full)
    full_rank = {p: i for i, p in enumerate(sorted(full, key=lambda p: -full[p].mean), 1)}
    quick_rank = {p: i for i, p in enumerate(sorted(quick, key=lambda p: -quick[p].mean), 1)}
    lines = [
        f"# {study}: does the quick form predict the full study?",
        "",
        f"- quick: {sources[0]}" + (f" · {timing}" if timing else ""),
        f"- full: {sources[1]}",
        f"- measured on commit {commit()}; "
        f"`{command or f'python experiments/validate_quick.py --study {study}'}`",
        "",
        "| check | result | measured |",
        "|---|---|---|",
        *[f"| {c.name} | {'pass' if c.passed else '**fail**'} | {c.detail} |" for c in results],
        "",
        *([f"The quick `{yearly}` composite rests on {draw}.", ""] if draw else []),
        f"Of the {total} pipeline pairs whose 95% intervals are apart at full size, the quick form orders "
        f"{same} the same way. Where two pipelines' intervals overlap, the full study does not resolve their "
        "order, so ρ over them measures agreement with noise.",
        "",
        *_ceiling(full, quick),
        "Composite accuracy per pipeline (mean over seeds, sd, seeds, 95% t interval over seeds), ranked by",
        "the full study; rank 1 is the most accurate.",
        "",
        "| pipeline | full rank | quick rank | full mean | sd | seeds | 95% CI "
        "| quick mean | sd | seeds | 95% CI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(set(full) | set(quick), key=lambda p: full_rank.get(p, 99)):
        f = str(full[p]) if p in full else "– | – | – | –"
        q = str(quick[p]) if p in quick else "– | – | – | –"
        lines.append(f"| {p} | {full_rank.get(p, '–')} | {quick_rank.get(p, '–')} | {f} | {q} |")
    return "\n".join(lines) + "\n", all(c.passed for c in results)


def _ceiling(full: dict[str, Accuracy], quick: dict[str, Accuracy]) -> list[str]:
    common = {p: a for p, a in full.items() if p in quick}
    usable = {p: a for p, a in common.items() if a.interval is not None}
    found = replicate_rho(usable)
    if found is None:
        return []
    median, share = found
    left_out = sorted(set(common) - set(usable))
    return [
        f"How far the full study agrees with itself: between two replicates of it (each pipeline's mean "
        f"drawn again from its seeds' spread: sd / √seeds times a t variate with seeds − 1 degrees of "
        f"freedom; 10,000 pairs, over the {len(usable)} "
        f"pipelines both sides have"
        + (f", less {', '.join(f'`{p}`' for p in left_out)} with one seed" if left_out else "")
        + f") the median ρ is {median:.2f}, and ρ ≥ {RHO_MIN:g} in {100 * share:.0f}% of pairs. That is "
        "about the most a quick form can reach; it counts the seeds' spread only, not the quick form's "
        "own test draw.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", choices=sorted(STUDIES), default="portraits_triggers")
    parser.add_argument(
        "--quick-run",
        type=Path,
        nargs="+",
        help="finished run(s) of the quick form, or its compare.parquet (default: run one)",
    )
    parser.add_argument(
        "--full-run",
        type=Path,
        help="a finished full-size run, or its comparison's compare.parquet (default: the full report)",
    )
    parser.add_argument("--wall", type=float, help="with --quick-run: its wall time in seconds, to report")
    parser.add_argument("--cpu", type=float, help="with --quick-run: its CPU time in seconds, to report")
    parser.add_argument("--out", type=Path, help="the report to write (default: results/reference/<study>/)")
    args = parser.parse_args()
    # bad paths are named before a quick form runs (minutes) or a traceback says less
    for flag, paths in (("--full-run", [args.full_run]), ("--quick-run", args.quick_run or [])):
        for path in (p for p in paths if p is not None):
            if not path.exists():
                parser.error(f"{flag} {path}: no such run folder or compare.parquet")
            if path.is_dir() and not (path / "cost.parquet").exists():
                parser.error(f"{flag} {path}: not a ctsim run folder (no cost.parquet in it)")
    full_report = REPO / "results" / "reference" / args.study / "report.md"
    if args.full_run is None and not full_report.exists():
        raise SystemExit(
            f"no full-size reference for {args.study}: give --full-run DIR ({full_report} is absent)"
        )
    if args.quick_run is not None:
        quick_dirs = args.quick_run
        # run folders given together are a study's parts, run side by side (study.run_study)
        timing = Timing(args.wall, args.cpu, len(quick_dirs)) if args.wall is not None else None
    else:
        quick_dirs, timing = run_study(f"{args.study}_quick", [], "quick", jobs=default_jobs(full=False))
    full = accuracies(args.full_run) if args.full_run else from_report(full_report)
    shown = (
        " ".join(
            str(d.resolve().relative_to(REPO) if d.resolve().is_relative_to(REPO) else d) for d in quick_dirs
        ),
        str(args.full_run or full_report.relative_to(REPO)),
    )
    yearly = STUDIES[args.study][0]
    comparison = [d for d in quick_dirs if d.suffix == ".parquet"]
    if comparison and len(quick_dirs) > 1:
        raise SystemExit("--quick-run: one compare.parquet, or run folders, not both")
    quick = from_comparison(comparison[0]) if comparison else from_runs(quick_dirs)
    draw = None if comparison else test_draw(quick_dirs, yearly)
    command = " ".join(["python experiments/validate_quick.py", *sys.argv[1:]])
    text, passed = report(args.study, quick, full, shown, timing, draw, command)
    out = args.out or REPO / "results" / "reference" / args.study / "validation.md"
    out.write_text(text)
    print(text + f"\nwrote {out}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
