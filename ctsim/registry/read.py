"""Read runs back: one run's tables, many runs' tables together, and SQL over them (polars).

``ctsim query "SQL" [RUN_DIR or glob ...]`` runs SQL over the tables of every run found
(default: every run under ``results/``), each row tagged with its run's folder in a ``run`` column.
The ``runs`` table has one row per run, with its status, so unfinished runs can be told apart: their
``generations``, ``lineage`` and ``evals`` hold what was saved so far, and ``cost``, ``quality``,
``skipped`` and ``metrics`` are written only when a run finishes.

>>> import polars as pl
>>> frames = {"cost": pl.DataFrame({"pipeline": ["a", "b"], "composite_accuracy": [0.8, 0.9]})}
>>> query("SELECT pipeline FROM cost ORDER BY composite_accuracy DESC LIMIT 1", frames)["pipeline"].to_list()
['b']
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from ctsim.registry.layout import (
    COST_SCHEMA,
    EVALS_SCHEMA,
    GENERATIONS_SCHEMA,
    JOURNAL,
    LINEAGE_SCHEMA,
    OPTIONAL,
    PARTIAL_EVALS_SCHEMA,
    SKIPPED_SCHEMA,
    TABLES,
    read_status,
)
from ctsim.validation import first_line

RUNS_SCHEMA = {
    "run": pl.String,
    "status": pl.String,
    # UTC, without a time zone attached: SQL's NOW() is a naive timestamp, and polars refuses to
    # compare a zoned column with it (``started >= NOW() - INTERVAL '7 days'``)
    "started": pl.Datetime("us"),
    "ended": pl.Datetime("us"),
    "wall_seconds": pl.Float64,
    "attempts": pl.Int64,
    "command": pl.String,
    "config_hash": pl.String,
    "code_hash": pl.String,
    "git_commit": pl.String,
    "git_dirty": pl.Boolean,
    "python": pl.String,
    "torch": pl.String,
    "ctsim": pl.String,
    "device": pl.String,
    "device_name": pl.String,
    "seeds": pl.List(pl.Int64),
    "error": pl.String,
    "config": pl.String,  # the resolved config, as JSON
}
ALL_TABLES = ("runs", *TABLES)


class QueryError(Exception):
    """A query that cannot run; the message names what is available."""


def runs_row(run_dir: Path, record: Mapping | None) -> pl.DataFrame:
    """The run's row of the ``runs`` table, from its ``status.json``."""
    record = dict(record or {})
    row = {k: record.get(k) for k in RUNS_SCHEMA}
    row["run"] = str(run_dir)
    row["status"] = record.get("status", "finished")  # runs from before status.json
    row["attempts"] = record.get("attempts", 1)
    row["config"] = json.dumps(record["config"]) if "config" in record else None
    for when in ("started", "ended"):
        row[when] = _naive_utc(row[when]) if isinstance(row[when], str) else None
    return pl.DataFrame([row], schema=RUNS_SCHEMA)


def _naive_utc(text: str) -> datetime:
    """An ISO timestamp of ``status.json`` as a naive datetime in UTC."""
    when = datetime.fromisoformat(text)
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def load(run_dir: str | Path) -> dict[str, pl.LazyFrame]:
    """The tables of one run folder, as lazy frames: a finished run's, or what an unfinished run has
    saved so far (see the module docstring)."""
    run_dir = Path(run_dir)
    record = read_status(run_dir)
    missing = _missing(run_dir)
    if missing and record is None:
        raise FileNotFoundError(f"{run_dir} is not a ctsim run directory: {_not_a_run(run_dir, missing)}")
    partial = journal_tables(run_dir) if missing else {}
    tables = {"runs": runs_row(run_dir, record).lazy()}
    for t in TABLES:
        if t in partial:
            tables[t] = partial[t].lazy()
        elif not missing and (path := run_dir / f"{t}.parquet").exists():
            tables[t] = pl.scan_parquet(path.resolve())  # read when collected, wherever the caller is then
        else:
            tables[t] = pl.DataFrame(schema=_schema(t)).lazy()
    return tables


def _not_a_run(path: Path, missing: Sequence[str]) -> str:
    """Why ``path`` is no run folder, and what the user may have meant."""
    if not path.exists():
        return "no such file or folder; expected a run folder (results/runs/<name>/<date>_<time>)"
    if not path.is_dir():
        return "it is a file; expected a run folder (results/runs/<name>/<date>_<time>)"
    below = [d for d in find_runs([path]) if d.resolve() != path.resolve()]  # not its own tables
    if below:
        shown = ", ".join(str(d) for d in below[:3]) + (
            f" and {len(below) - 3} more" if len(below) > 3 else ""
        )
        return f"it holds {len(below)} run(s) below it ({shown}): load one of them, or all with load_many"
    return f"no status.json, and missing {', '.join(f'{t}.parquet' for t in missing)}"


def _schema(table: str) -> dict:
    if table == "quality":
        from ctsim.measure.quality import (
            QUALITY_SCHEMA,  # imports torch: only for an unfinished run's empty table
        )

        return QUALITY_SCHEMA
    if table == "metrics":
        from ctsim.measure.metrics import METRICS_SCHEMA  # the same

        return METRICS_SCHEMA
    schemas = {"evals": EVALS_SCHEMA, "generations": GENERATIONS_SCHEMA, "cost": COST_SCHEMA}
    return {**schemas, "lineage": LINEAGE_SCHEMA, "skipped": SKIPPED_SCHEMA}[table]


def journal_tables(run_dir: Path) -> dict[str, pl.DataFrame]:
    """The partial tables of a run that has not finished: generations and lineage committed so far,
    and the evaluations computed so far (``active`` is null: it is known only at the end)."""
    journal = run_dir / JOURNAL
    points = sorted(journal.glob("point-*.parquet"))
    gens = pl.concat([pl.read_parquet(p) for p in points]) if points else None
    evals = sorted(journal.glob("eval-*.parquet"))
    return {
        "generations": gens.select(list(GENERATIONS_SCHEMA))
        if gens is not None
        else pl.DataFrame(schema=GENERATIONS_SCHEMA),
        "lineage": gens.select(list(LINEAGE_SCHEMA))
        if gens is not None
        else pl.DataFrame(schema=LINEAGE_SCHEMA),
        "evals": pl.concat(
            [pl.read_parquet(p).select(list(PARTIAL_EVALS_SCHEMA)) for p in evals]
        ).with_columns(pl.lit(None, dtype=pl.Boolean).alias("active"))
        if evals
        else pl.DataFrame(schema={**PARTIAL_EVALS_SCHEMA, "active": pl.Boolean}),
    }


def _missing(run_dir: Path) -> list[str]:
    return [t for t in TABLES if t not in OPTIONAL and not (run_dir / f"{t}.parquet").exists()]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders at or below each path (a path may be a glob)."""
    found: set[Path] = set()
    for given in paths:
        matches = [Path(m) for m in glob.glob(str(given))] or [Path(given)]
        for path in matches:
            if (path / "status.json").is_file() or (path / "evals.parquet").is_file():
                found.add(path)
            elif path.is_dir():
                found |= {p.parent for p in path.rglob("status.json")}
                found |= {p.parent for p in path.rglob("evals.parquet")}
    return sorted(found)


def load_many(
    root: str | Path | Sequence[str | Path] = "results/runs", unfinished: bool = False
) -> dict[str, pl.LazyFrame]:
    """The tables of every run under ``root`` (a folder, a glob, or a list of them), concatenated, with
    a ``run`` column (the folder).

    Unless ``unfinished``, runs that are not finished (``status.json`` says running, interrupted or
    failed, or tables are missing) are left out, with one warning naming them.
    """
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    complete, skipped = [], []
    for d in find_runs(roots):
        status = (read_status(d) or {}).get("status", "finished")  # runs from before status.json
        missing = _missing(d)
        if unfinished or (status == "finished" and not missing):
            complete.append(d)
        else:
            skipped.append(f"{d} ({status}{', no ' + ', '.join(missing) if missing else ''})")
    if skipped:
        warnings.warn(f"left out {len(skipped)} unfinished run(s): {'; '.join(skipped)}", stacklevel=2)
    if not complete:
        where = ", ".join(str(r) if glob.glob(str(r)) else f"{r} (no such file or folder)" for r in roots)
        raise FileNotFoundError(f"no {'' if unfinished else 'finished '}ctsim runs under {where}")
    tables: dict[str, list[pl.LazyFrame]] = {t: [] for t in ALL_TABLES}
    for d in complete:
        for t, frame in load(d).items():
            tables[t].append(frame if t == "runs" else frame.with_columns(pl.lit(str(d)).alias("run")))
    return {t: pl.concat(frames, how="diagonal_relaxed") for t, frames in tables.items()}


def query(sql: str, tables: Mapping[str, pl.DataFrame | pl.LazyFrame]) -> pl.DataFrame:
    """Run SQL over named tables (e.g. from :func:`load` or :func:`load_many`) with polars.

    A query polars cannot run raises :class:`QueryError`, naming the tables and their columns.
    """
    if not isinstance(tables, Mapping):
        raise TypeError(
            f"tables: expected the tables to query, by name (load(run_dir) or load_many(root) gives them), "
            f"got {type(tables).__name__} {tables!r:.60}"
        )
    try:
        return pl.SQLContext(dict(tables)).execute(sql).collect()
    except (pl.exceptions.PolarsError, ValueError) as e:
        available = "\n".join(
            f"  {name}: {', '.join(frame.collect_schema().names())}" for name, frame in tables.items()
        )
        first = first_line(e)
        raise QueryError(f"{first}\ntables and their columns:\n{available}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ctsim query",
        description="SQL (polars) over the tables of many runs: " + ", ".join(ALL_TABLES) + ".",
    )
    parser.add_argument(
        "sql", help='e.g. "SELECT pipeline, AVG(composite_accuracy) FROM cost GROUP BY pipeline"'
    )
    parser.add_argument(
        "runs", nargs="*", default=["results"], help="run folders, folders above them, or globs"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print CSV")
    out.add_argument("--markdown", action="store_true", help="print a markdown table")
    out.add_argument("--parquet", metavar="FILE", help="write the result to FILE (parquet)")
    args = parser.parse_args(argv)
    if args.parquet and Path(args.parquet).exists():  # it may be a run's own table: never overwritten
        print(f"ctsim.query: --parquet {args.parquet}: the file exists; choose a new file", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables = load_many(args.runs, unfinished=True)
        result = query(args.sql, tables)
    except (FileNotFoundError, QueryError) as e:
        print(f"ctsim.query: {e}", file=sys.stderr)
        return 2
    if args.parquet:
        Path(args.parquet).parent.mkdir(parents=True, exist_ok=True)
        result.write_parquet(args.parquet)
        print(f"{len(result)} row(s) written to {args.parquet}")
    elif args.csv:
        sys.stdout.write(result.write_csv())
    else:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            fmt_str_lengths=80,
            tbl_formatting="MARKDOWN" if args.markdown else "UTF8_FULL_CONDENSED",
            tbl_hide_dataframe_shape=bool(args.markdown),
            tbl_hide_column_data_types=bool(args.markdown),
        ):
            print(result)
    return 0
