"""Compare runs: one table per pipeline with uncertainty over seeds, plots and ``report.html``.

``ctsim compare RUN_OR_SWEEP_DIR ... [--out DIR] [--price-per-hour P] [--candidates NAME]
[--alpha A]``

Every run folder at or below the given folders is read back (:mod:`ctsim.registry`). A Hydra sweep
writes one run per job, so the same pipeline appears in several runs; it is told apart by the
overrides its runs do not share (``trigger=time``, ``trigger=amount``), leaving out those that do not
say what a pipeline is (:data:`NOT_PIPELINE`: ``population.*``, ``name``, ``progress``, ``output.*``,
``dataset.root``, ``hydra*``). Its seeds are gathered from all the runs that hold it.

**Significance.** The table is sorted by significance group, then accuracy: group 1 holds the best
pipeline and every pipeline a paired test cannot tell from it, Holm-corrected at ``alpha``
(:mod:`ctsim.reports.significance`, which says what is paired). ``compare.md`` and ``report.html`` say
which pipelines those are, and name every pipeline whose accuracy covers fewer slices than the others.

Per pipeline (:data:`SUMMARY_SCHEMA`): composite accuracy, its mean and 95% confidence interval over
seeds (Student's t, :func:`scipy.stats.t.interval`; the reports cut it to [0, 1], where accuracy lies,
and name the intervals that tell nothing: over 2 seeds, or reaching past 0 or 1), macro-F1 and AUROC,
triggers, samples trained, FLOPs, **device-seconds** (the seconds the policy would cost in deployment:
trigger decisions, selection and training; the simulator's own evaluation is left out), an estimated
cost in dollars (device-hours × ``price_per_hour``), incorporation latency
(:mod:`ctsim.measure.quality`), the continual-learning metrics (:mod:`ctsim.measure.metrics`) and the
regret against the oracle's frontier (:mod:`ctsim.reports.oracle`) when one compared pipeline trains at
every slice: "exact" or "approximate" in every heading, with a note naming any pipeline above an
approximate frontier and why.

Refused, naming the runs: folders without runs, runs that replay different data (or split it
differently), runs written by a ctsim with another table version, the same pipeline and seed in two
runs. Runs that failed or did not finish are left out and listed, with their errors, in the report.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import yaml

from ctsim.registry.layout import STATUS, TABLE_VERSION, read_status
from ctsim.registry.read import find_runs, load
from ctsim.reports.comparison import (
    COLUMNS,
    PRICE_PER_HOUR,
    SUMMARY_SCHEMA,
    Comparison,
    Run,
    cells,
    chance_notes,
    coverage_notes,
    headings,
    interval_notes,
    significance_note,
    tie_notes,
)
from ctsim.reports.significance import ALPHA, groups

OUTPUTS = ("compare.parquet", "compare.md", "report.html")
# overrides that do not say what a pipeline is (which seeds or variants run, the run's name, its
# console and files, where data lives), so they never name one
NOT_PIPELINE = ("population", "name", "progress", "output", "dataset.root", "hydra")


class CompareError(ValueError):
    """Runs that cannot be compared; the message names them and says why."""


def gather(paths: Sequence[str | Path], price_per_hour: float = PRICE_PER_HOUR) -> Comparison:
    """Read every run at or below ``paths``; raise :class:`CompareError` where they cannot be compared."""
    if not math.isfinite(price_per_hour) or price_per_hour < 0:
        raise CompareError(f"--price-per-hour {price_per_hour}: expected a number ≥ 0 (dollars per hour)")
    _check_exist(paths)
    folders = find_runs(paths)
    unrun = _jobs_without_runs(paths)
    left_out = [(folder, why) for folder, why, _ in unrun]
    if not folders and not left_out:
        raise CompareError(
            f"no ctsim runs at or below {', '.join(map(str, paths))} (a run folder holds status.json "
            "and its tables; a sweep folder holds one per job)"
        )
    found = [_run(folder) for folder in folders]
    runs = [r for r in found if r.status == "finished"]
    left_out += [
        (str(r.path), r.status + (f": {r.error}" if r.error else "")) for r in found if r not in runs
    ]
    if not runs:
        shown = "; ".join(f"{f} ({why})" for f, why in left_out)
        raise CompareError(f"no finished runs to compare: {shown}")
    _check_comparable(runs)
    loaded = {r.path: _tables(r.path) for r in runs}
    also = [overrides for _, _, overrides in unrun]  # a job that wrote no run still tells pipelines apart
    labels = _labels(runs, found, {path: t["cost"] for path, t in loaded.items()}, also)
    tables = _merged(loaded, labels)
    return Comparison(runs, left_out, tables, labels, price_per_hour)


def _check_exist(paths: Sequence[str | Path]) -> None:
    """Refuse a path that is not there (and, as a glob, matches nothing)."""
    missing = [str(p) for p in paths if not Path(p).exists() and not glob.glob(str(p))]
    if missing:
        raise CompareError(
            f"no such folder: {', '.join(missing)} (give run folders, sweep folders, or folders above them)"
        )


def _run(folder: Path) -> Run:
    record = read_status(folder) or {}
    config = (record.get("config") or {}).get("run", {})
    dataset = config.get("dataset") or {}
    stream = config.get("stream") or {}
    overrides = tuple(o for o in record.get("overrides", []) if not _not_pipeline(o))
    name = dataset.get("_target_", "?").rsplit(".", 1)[-1]
    if "size" in dataset:
        name += f" (size {dataset['size']})"
    status = record.get("status", "finished")
    if status == "finished" and not (folder / "cost.parquet").exists():
        status = "unfinished (no cost.parquet)"
    return Run(
        path=folder,
        status=status,
        error=record.get("error"),
        overrides=overrides,
        name=str(config.get("name", "")),
        data=(record.get("data_hash"), stream.get("test_fraction"), stream.get("split_seed")),
        dataset=name,
        version=int(record.get("tables", 1)),
        change_points=tuple(record.get("change_points") or ()),
        config=record.get("config") or {},
    )


def _not_pipeline(override: str) -> bool:
    """Whether ``override`` (``key=value``, ``+key=…``, ``~key``, ``hydra/launcher=…``) leaves the
    pipeline as it is (:data:`NOT_PIPELINE`).

    >>> [_not_pipeline(o) for o in ("progress=false", "+population.variants.a=[x]", "trigger.every=5")]
    [True, True, False]
    """
    key = override.split("=", 1)[0].lstrip("+~").replace("/", ".")
    return any(key == k or key.startswith(k + ".") for k in NOT_PIPELINE)


def _jobs_without_runs(paths: Sequence[str | Path]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Sweep jobs (Hydra's ``.hydra`` folder) that wrote no run (they failed before it started): each
    folder, why, and its overrides that say what a pipeline is."""
    found = []
    for given in paths:
        for hydra_dir in sorted(Path(given).rglob(".hydra")):
            job = hydra_dir.parent
            if not (job / STATUS).exists() and not (job / "evals.parquet").exists():
                overrides = _read_overrides(hydra_dir / "overrides.yaml")
                why = f"no run was written ({' '.join(overrides)}){_said(job)}"
                found.append((str(job), why, tuple(o for o in overrides if not _not_pipeline(o))))
    return found


def job_error(job: Path) -> str | None:
    """Why a sweep job gave no result, as it said in its ``ctsim.log`` (the last ``ctsim: ...``
    message, joined into one line); None where it said nothing there."""
    try:
        lines = (job / "ctsim.log").read_text().splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("ctsim: ")]
    if not starts:
        return None
    return " ".join(line.strip() for line in lines[starts[-1] :]).removeprefix("ctsim: ")


def _said(job: Path) -> str:
    why = job_error(job)
    return f"; see {job / 'ctsim.log'}" if why is None else f": {why}"


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """The jobs of a sweep that gave no result, each with why: no run written, a run that did not
    finish, or one that finished without an accuracy (its trigger never fired)."""
    found = []
    for hydra_dir in sorted(sweep_dir.glob("*/.hydra"), key=lambda d: _job_order(d.parent.name)):
        job = hydra_dir.parent
        record = read_status(job)
        if record is None:
            found.append((job, f"no run was written{_said(job)}"))
        elif record.get("status", "finished") != "finished":
            error = record.get("error")
            found.append((job, record.get("status", "?") + (f": {error}" if error else "")))
        elif (job / "cost.parquet").exists():
            accuracy = pl.read_parquet(job / "cost.parquet", columns=["composite_accuracy"])
            if accuracy["composite_accuracy"].drop_nulls().drop_nans().is_empty():
                found.append((job, job_error(job) or "no pipeline has an accuracy"))
    return found


def _job_order(name: str) -> tuple[int, str]:
    """Sweep job folders in their jobs' order (``2`` before ``10``).

    >>> sorted(["10", "2", "comparison"], key=_job_order)
    ['2', '10', 'comparison']
    """
    return (int(name), "") if name.isdigit() else (1 << 62, name)


def _read_overrides(path: Path) -> list[str]:
    try:
        return list(map(str, yaml.safe_load(path.read_text()) or []))
    except (OSError, TypeError, yaml.YAMLError):
        return ["overrides unknown"]


def _check_comparable(runs: list[Run]) -> None:
    old = [r for r in runs if r.version != TABLE_VERSION]
    if old:
        shown = ", ".join(f"{r.path} (version {r.version})" for r in old)
        raise CompareError(
            f"these runs were written by an older ctsim, with table version other than {TABLE_VERSION}: "
            f"{shown}. Their tables lack columns the comparison reads; run them again with this "
            "ctsim, or read them with ctsim query"
        )
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.data, []).append(r)
    if len(groups) > 1:
        shown = "; ".join(
            f"{rs[0].dataset}, data {str(key[0])[:12]}, test fraction {key[1]}, split seed {key[2]}: "
            + ", ".join(str(r.path) for r in rs)
            for key, rs in groups.items()
        )
        raise CompareError(
            "these runs replay different data (or split it differently), so their accuracies are not "
            f"comparable: {shown}. Compare the runs of one dataset at a time"
        )


def _tables(run_dir: Path) -> dict[str, pl.DataFrame]:
    """A finished run's tables the comparison reads (not its lineage)."""
    return {name: lazy.collect() for name, lazy in load(run_dir).items() if name not in ("runs", "lineage")}


def _labels(
    runs: list[Run],
    found: list[Run],
    costs: dict[Path, pl.DataFrame],
    also: Sequence[tuple[str, ...]] = (),
) -> dict[tuple[str, str], str]:
    """Each (run folder, pipeline) → its name in the comparison: the pipeline, told apart by the
    overrides its run does not share with all the others found (failed ones too, and ``also``, the
    overrides of jobs that wrote no run, so that a pipeline keeps its name when a job of its sweep
    fails)."""
    shared = set.intersection(*(set(r.overrides) for r in found), *(set(o) for o in also))
    labels = {}
    for r in runs:
        own = " ".join(o for o in r.overrides if o not in shared)
        names = costs[r.path]["pipeline"].unique().to_list()
        for p in names:
            if not own:
                labels[(str(r.path), p)] = p
            elif len(names) == 1 and p == r.name:
                labels[(str(r.path), p)] = own
            else:
                labels[(str(r.path), p)] = f"{p} [{own}]"
    return labels


def _merged(
    loaded: dict[Path, dict[str, pl.DataFrame]], labels: dict[tuple[str, str], str]
) -> dict[str, pl.DataFrame]:
    """Every run's tables, concatenated, ``pipeline`` replaced by its label, ``run`` added."""
    frames: dict[str, list[pl.DataFrame]] = {}
    for path, run_tables in loaded.items():
        mapping = {p: label for (run, p), label in labels.items() if run == str(path)}
        for name, frame in run_tables.items():
            if "pipeline" in frame.columns:
                frame = frame.with_columns(
                    pl.col("pipeline").replace_strict(mapping, default=pl.col("pipeline"))
                )
            frames.setdefault(name, []).append(frame.with_columns(pl.lit(str(path)).alias("run")))
    tables = {name: pl.concat(fs, how="diagonal_relaxed") for name, fs in frames.items()}
    twice = (
        tables["cost"]
        .group_by("pipeline", "seed")
        .agg(pl.col("run").unique())
        .filter(pl.col("run").list.len() > 1)
    )
    if twice.height:
        shown = "; ".join(
            f"{row['pipeline']} seed {row['seed']} in {', '.join(row['run'])}"
            for row in twice.iter_rows(named=True)
        )
        raise CompareError(
            f"the same pipeline and seed in more than one run: {shown}. Give the folders of one of them only"
        )
    return tables


# -- the table --------------------------------------------------------------------------------------


def with_oracle(comparison: Comparison, candidates: str | None = None) -> Comparison:
    """Add the hindsight-optimal frontier and each pipeline's regret, where a compared pipeline trains at
    every slice (or ``candidates`` names one); otherwise a note says why there is none. Exact
    candidates are preferred; the frontier is labelled exact or approximate
    (:func:`ctsim.reports.oracle.exactness`), and pipelines above it are named with the reason."""
    from ctsim.reports.oracle import (
        OracleError,
        above_note,
        candidate_variant,
        frontier,
        regrets,
        seeds_without,
    )

    t = comparison.tables
    try:
        num_slices = t["evals"]["slice"].n_unique()
        exact = [p for p in t["generations"]["pipeline"].unique() if _exactness(comparison, p)[0]]
        name = candidate_variant(t["generations"], num_slices, candidates, prefer=exact)
        is_exact, why = _exactness(comparison, name)
        comparison.frontier = frontier(t["evals"], t["generations"], name, exact_frontier=is_exact)
        missing = seeds_without(t["cost"], t["generations"], name)
        if len(missing) == t["cost"]["seed"].n_unique():
            raise OracleError(f"the candidates ({name}) have no generations for any compared seed")
        comparison.regret = regrets(
            t["cost"], t["evals"], t["generations"], name, exact_frontier=is_exact, partial=True
        )
        comparison.candidates, comparison.oracle = name, "exact" if is_exact else "approximate"
        comparison.notes.append(f"The frontier is {comparison.oracle}: {why}.")
        if missing:
            comparison.notes.append(
                f"No frontier for seed(s) {missing}: the candidates ({name}) did not run there, so "
                "regret is over the other seeds only."
            )
        mean = comparison.regret.group_by("pipeline", maintain_order=True).agg(pl.col("regret").mean())
        above = [(p, r) for p, r in mean.iter_rows() if r is not None and r < -1e-12]
        if above:
            comparison.notes.append(above_note(above, name, is_exact, why))
    except OracleError as e:
        if candidates is not None:
            raise CompareError(f"--candidates: {e}") from None
        comparison.notes.append(f"No regret: {e}.")
    return comparison


def _exactness(comparison: Comparison, label: str) -> tuple[bool, str]:
    """:func:`ctsim.reports.oracle.exactness` of the pipeline called ``label`` in the comparison (exact
    only if it is in every run that holds it)."""
    from ctsim.reports.oracle import exactness

    configs = {str(r.path): r.config for r in comparison.runs}
    gens = comparison.tables["generations"]
    verdicts = []
    for (run, pipeline), shown in comparison.labels.items():
        if shown == label:
            own = gens.filter((pl.col("run") == run) & (pl.col("pipeline") == label))
            found, why = exactness(
                configs.get(run), own.with_columns(pl.lit(pipeline).alias("pipeline")), pipeline
            )
            verdicts.append((found, why.replace(f"({pipeline})", f"({label})")))
    return min(verdicts, default=(False, f"the runs of {label} record no config"))


def summary(comparison: Comparison, alpha: float = ALPHA) -> pl.DataFrame:
    """One row per pipeline (:data:`SUMMARY_SCHEMA`), by significance group (:mod:`~ctsim.reports.
    significance`; ``alpha``: the family-wise error rate of each group's tests), then accuracy."""
    from scipy import stats

    t = comparison.tables
    cost = t["cost"].with_columns(
        (pl.col("train_flops") + pl.col("selection_flops")).alias("flops"),
        (pl.col("trigger_s") + pl.col("selection_s") + pl.col("train_s")).alias("device_s"),
    )
    per_seed = cost.select(
        "pipeline",
        "seed",
        "composite_accuracy",
        "composite_macro_f1",
        pl.col("composite_auroc")
        if "composite_auroc" in cost.columns
        else pl.lit(None, pl.Float64).alias("composite_auroc"),
        "triggers",
        "samples_trained",
        "flops",
        "device_s",
        "covered_slices",
    )
    extra = {
        "quality": ["incorporation_latency"],
        "metrics": [
            "bwt",
            "fwt",
            "forgetting",
            "eval_fix_id",
            "eval_fix_ood",
            "eval_fix_worst",
            "eval_stream",
        ],
    }
    for name, columns in extra.items():
        frame = t.get(name)
        have = [c for c in columns if frame is not None and c in frame.columns]
        if have:
            per_seed = per_seed.join(
                frame.select("pipeline", "seed", *have), on=["pipeline", "seed"], how="left"
            )
        per_seed = per_seed.with_columns(pl.lit(None, pl.Float64).alias(c) for c in columns if c not in have)
    if comparison.regret is not None:
        per_seed = per_seed.join(
            comparison.regret.select("pipeline", "seed", "regret"), on=["pipeline", "seed"], how="left"
        )
    else:
        per_seed = per_seed.with_columns(pl.lit(None, pl.Float64).alias("regret"))

    rows = []
    for (name,), group in per_seed.group_by("pipeline", maintain_order=True):
        acc = group["composite_accuracy"].drop_nulls().drop_nans().to_list()
        mean = sum(acc) / len(acc) if acc else None
        sd = float(pl.Series(acc).std()) if len(acc) > 1 else None
        low = high = None
        if len(acc) > 1:
            if sd == 0:
                low = high = mean
            else:
                low, high = stats.t.interval(0.95, len(acc) - 1, loc=mean, scale=stats.sem(acc))
        device_s = _mean(group["device_s"])
        rows.append(
            {
                "pipeline": name,
                "seeds": group.height,
                "accuracy": mean,
                "ci_low": low,
                "ci_high": high,
                "accuracy_sd": sd,
                "covered_slices": _mean(group["covered_slices"]),
                "macro_f1": _mean(group["composite_macro_f1"]),
                "auroc": _mean(group["composite_auroc"]),
                "triggers": _mean(group["triggers"]),
                "samples": _mean(group["samples_trained"]),
                "tflops": None if (f := _mean(group["flops"])) is None else f / 1e12,
                "device_s": device_s,
                "cost_usd": None if device_s is None else device_s / 3600 * comparison.price_per_hour,
                **{c: _mean(group[c]) for c in ("incorporation_latency", "regret", *extra["metrics"])},
            }
        )
    table = pl.DataFrame(rows).drop("group", "p_vs_best", "test", strict=False)
    found = groups(t["evals"], dict(zip(table["pipeline"], table["accuracy"])), alpha)
    table = table.join(found, on="pipeline", how="left").sort(
        "group", "accuracy", descending=[False, True], nulls_last=True, maintain_order=True
    )
    return table.select(pl.col(c).cast(dtype) for c, dtype in SUMMARY_SCHEMA.items())


def _mean(column: pl.Series) -> float | None:
    values = column.cast(pl.Float64).drop_nulls().drop_nans()
    return float(values.mean()) if len(values) else None


# -- writing ---------------------------------------------------------------------------------------


def default_out(paths: Sequence[str | Path]) -> Path:
    """``DIR/comparison`` for one folder; several need ``--out``."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "comparison"
    raise CompareError(
        "say where the comparison goes with --out DIR (without it, it goes into the one folder given, "
        f"but {len(paths)} path(s) were given: {', '.join(map(str, paths))})"
    )


def write(comparison: Comparison, table: pl.DataFrame, out: Path) -> list[Path]:
    """The table (:func:`summary`; parquet and markdown), the plots and ``report.html`` in ``out``;
    nothing is overwritten."""
    from ctsim.reports import html, plots

    existing = [n for n in OUTPUTS if (out / n).exists()]
    if existing:
        raise CompareError(
            f"{out} already holds {', '.join(existing)}; a comparison never overwrites (give another "
            "folder with --out DIR)"
        )
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.draw_comparison(comparison, table, out / "plots")
    files = [*figures.values()]
    path = out / "compare.parquet"
    table.write_parquet(path)
    files.append(path)
    text = markdown(comparison, table, figures, out)
    (out / "compare.md").write_text(text)
    files.append(out / "compare.md")
    page = html.report(comparison, table, figures)
    (out / "report.html").write_text(page)
    files.append(out / "report.html")
    return files


def markdown(comparison: Comparison, table: pl.DataFrame, figures: dict[str, Path], out: Path) -> str:
    lines = [
        "# Comparison",
        "",
        f"{len(comparison.runs)} run(s), {table.height} pipeline(s) · dataset {comparison.runs[0].dataset} · "
        f"price {comparison.price_per_hour:g} $ per device-hour",
        "",
        "| " + " | ".join(h for h, _ in headings(comparison).values()) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in table.iter_rows(named=True):
        lines.append("| " + " | ".join(cells(row).values()) + " |")
    lines += ["", significance_note(table, comparison.alpha), ""]
    cautions = [*chance_notes(table), *tie_notes(table), *interval_notes(table), *coverage_notes(table)]
    lines += [*(f"**{n}**" for n in cautions), ""] if cautions else []
    lines += [f"- **{h}**: {d}" for h, d in headings(comparison).values()]
    if comparison.candidates:
        lines.append(
            f"- Regret against the {comparison.oracle} frontier of the candidates of "
            f"`{comparison.candidates}` (see `ctsim oracle`)."
        )
    lines += [f"- {n}" for n in comparison.notes]
    if comparison.left_out:
        lines += ["", "## Left out", ""]
        lines += [f"- `{folder}`: {why}" for folder, why in comparison.left_out]
    lines += ["", "## Plots", ""]
    from ctsim.reports.plots import plot_labels  # matplotlib loads with the plots, not before

    shortened = plot_labels(table)
    if shortened:
        lines += [
            "Long pipeline names are shortened in the plots:",
            "",
            "| in the plots | pipeline |",
            "|---|---|",
        ]
        lines += [f"| {short} | {full} |" for short, full in shortened]
        lines.append("")
    lines += [f"![{name}]({p.relative_to(out)})" for name, p in figures.items()]
    lines += ["", "## Runs", ""]
    lines += [f"- `{path}`: {said}" for path, said in comparison.run_lines()]
    return "\n".join(lines) + "\n"


def compare(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    price_per_hour: float = PRICE_PER_HOUR,
    candidates: str | None = None,
    alpha: float = ALPHA,
) -> tuple[Path, Comparison, pl.DataFrame]:
    """Gather, add the oracle, write; the folder written, the comparison and its table. ``alpha``: the
    family-wise error rate of the significance groups' tests."""
    if not 0 < alpha < 1:
        raise CompareError(f"--alpha {alpha}: expected a number between 0 and 1 (e.g. 0.05)")
    _check_exist(paths)
    target = Path(out) if out is not None else default_out(paths)
    comparison = with_oracle(gather(paths, price_per_hour), candidates)
    comparison.alpha = alpha
    table = summary(comparison, alpha)
    write(comparison, table, target)
    return target, comparison, table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ctsim compare",
        description="Compare runs: a table per pipeline (mean and 95% CI over seeds, significance groups, "
        "cost), plots and report.html.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders, or folders above them")
    parser.add_argument("--out", help="where to write (default: DIR/comparison for one folder)")
    parser.add_argument(
        "--price-per-hour",
        type=float,
        default=PRICE_PER_HOUR,
        help="dollars per device-hour (default %(default)s)",
    )
    parser.add_argument(
        "--candidates", help="the pipeline that trains at every slice, for the oracle (default: found)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=ALPHA,
        help="family-wise error rate of the paired tests that group pipelines (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, comparison, table = compare(
                args.paths, args.out, args.price_per_hour, args.candidates, args.alpha
            )
    except (CompareError, FileNotFoundError) as e:
        print(f"ctsim.compare: {e}", file=sys.stderr)
        return 2
    print(console(comparison, table, out))
    return 0


def console(comparison: Comparison, table: pl.DataFrame, out: Path) -> str:
    """The comparison's table (:func:`summary`) in a few lines, and what was left out."""
    lines = [f"ctsim.compare · {len(comparison.runs)} run(s) · {table.height} pipeline(s) · wrote {out}/"]
    width = max([28, *(len(p) for p in table["pipeline"])])  # names line up, however long
    for row in table.iter_rows(named=True):
        c = cells(row)
        lines.append(
            f"  group {c['group']:<2} {row['pipeline']:<{width}} seeds {row['seeds']}  "
            f"accuracy {c['accuracy']} [{c['ci']}]  triggers {c['triggers']}  cost $ {c['cost_usd']}"
        )
    lines.append("  group 1: the best and those a paired test cannot tell from it (compare.md says how)")
    notes = (*chance_notes(table), *tie_notes(table), *interval_notes(table), *coverage_notes(table))
    lines += [f"  ! {n}" for n in notes]
    for folder, why in comparison.left_out:
        lines.append(f"  left out {folder}: {why}")
    return "\n".join(lines)
