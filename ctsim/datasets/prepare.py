"""``ctsim datasets``: prepare a dataset from the files you have, or show what is prepared.

::

    ctsim datasets prepare yearbook --from ~/data/yearbook.pkl --trust-pickle
    ctsim datasets prepare yearbook --from ~/data/faces_aligned_small_mirrored_co_aligned_cropped
    ctsim datasets list
    ctsim datasets info yearbook

``prepare`` converts the source into ``<root>/<name>/`` (see :mod:`ctsim.datasets.prepared`) and prints a
summary. Bad input stops it with the file, the record or row, and what was expected (exit code 2), and
leaves any earlier cache as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctsim.datasets.prepared import (
    DataError,
    Preparer,
    class_balance,
    read_manifest,
    summary,
    write_cache,
)
from ctsim.validation import override_text


def preparers() -> dict[str, Preparer]:
    """Every dataset ``prepare`` knows, by name."""
    from ctsim.datasets.text import ARXIV, HUFFPOST
    from ctsim.datasets.vision import VISION
    from ctsim.datasets.yearbook import YEARBOOK

    return {p.name: p for p in (YEARBOOK, VISION, HUFFPOST, ARXIV)}


# Datasets that need no preparation: generated from their config, or (tables) read directly.
GENERATED = {"portraits": "yearbooknet", "sensors": "lstm", "sea": "mlp", "hyperplane": "mlp", "rbf": "mlp"}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ctsim datasets",
        description="Prepare a dataset once from the files you have; `dataset=NAME` then replays it.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="convert a dataset's files into ctsim's cache")
    names = prepare.add_subparsers(dest="name", required=True, metavar="NAME")
    for p in preparers().values():
        sub = names.add_parser(p.name, help=p.help, description=f"{p.help}. {p.where}")
        sub.add_argument("--from", dest="source", type=Path, required=True, metavar="PATH", help="the source")
        sub.add_argument("--root", type=Path, default=Path("datasets"), help="data root (default: datasets)")
        p.arguments(sub)
    table = names.add_parser(
        "table", help="check a time-stamped CSV or parquet table and summarise it (tables need no cache)"
    )
    table.add_argument("--from", dest="source", type=Path, required=True, metavar="PATH", help="the table")
    table.add_argument("--time-column", required=True)
    table.add_argument("--label-column", required=True)
    table.add_argument(
        "--feature-columns", default=None, help="comma-separated (default: every other column)"
    )
    table.add_argument(
        "--slice-by",
        default="auto",
        help="auto (1mo for dates, value for numbers), a calendar period (1d, 1w, 1mo, 1q, 1y), value (one "
        "slice per distinct time) or a row count",
    )
    table.add_argument(
        "--time-format",
        default=None,
        help="a strftime format for text times not written year first: %%m/%%d/%%Y",
    )
    table.add_argument(
        "--classes",
        default=None,
        help="comma-separated, in label order: no,yes (default: the sorted distinct labels; a label in one "
        "row only is refused as a typo unless listed)",
    )
    table.add_argument("--missing", default="error", choices=["error", "drop", "fill"])
    for name in GENERATED:
        names.add_parser(name, help=f"{name} is generated from its config: nothing to prepare")
    for name, text in (("list", "list the prepared datasets under a data root"), ("info", "summarise one")):
        sub = commands.add_parser(name, help=text)
        if name == "info":
            sub.add_argument("name", help="the prepared dataset's folder name")
        sub.add_argument("--root", type=Path, default=Path("datasets"), help="data root (default: datasets)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        found = sorted(f for f in args.root.glob("*/") if read_manifest(f) is not None)
        for folder in found:
            print(summary(folder.name, folder, read_manifest(folder)), end="\n\n")
        if not found:
            print(f"no prepared datasets under {args.root}/")
        return 0
    if args.command == "info":
        folder = args.root / args.name
        manifest = read_manifest(folder)
        if manifest is None:
            print(f"error: no prepared dataset at {folder}", file=sys.stderr)
            return 2
        print(summary(args.name, folder, manifest))
        return 0
    if args.name in GENERATED:
        print(
            f"{args.name} is generated from its config when a run starts (seeded, offline): nothing to "
            f"prepare.\nRun it with: python -m ctsim dataset={args.name} model={GENERATED[args.name]}"
        )
        return 0
    if args.name == "table":
        return _check_table(args)
    preparer = preparers()[args.name]
    if not args.source.exists():
        print(f"error: {args.source}: no such file or folder. {preparer.where}", file=sys.stderr)
        return 2
    options = {k: _plain(v) for k, v in vars(args).items() if k not in ("command", "name", "source", "root")}
    folder = args.root / preparer.folder_name(args)
    try:
        prepared = preparer.convert(args.source, args)
        manifest = write_cache(folder, prepared, args.source, options)
    except DataError as e:
        print(f"error: {e}\nnothing was written; an earlier cache, if any, is unchanged", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None or not str(e.filename).startswith(str(args.root)):
            raise  # not the cache's: a converter's own reading error, to be fixed where it is raised
        print(
            f"error: cannot write the cache {folder} ({e.filename}: {e.strerror}); an earlier cache, if any, "
            "is unchanged",
            file=sys.stderr,
        )
        return 2
    print(summary(folder.name, folder, manifest))
    return 0


def _check_table(args: argparse.Namespace) -> int:
    """``prepare table``: check the table as a run would, print what a run will see; write nothing."""
    from ctsim.datasets.table import Table
    from ctsim.validation import ConfigError

    slice_by = int(args.slice_by) if args.slice_by.isdigit() else args.slice_by
    features = args.feature_columns.split(",") if args.feature_columns else None
    classes = args.classes.split(",") if args.classes else None
    try:
        table = Table(
            path=str(args.source),
            time_column=args.time_column,
            label_column=args.label_column,
            feature_columns=features,
            slice_by=slice_by,
            time_format=args.time_format,
            classes=classes,
            missing=args.missing,
        )
        ConfigError.raise_all(table.path_problems())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samples = table.load()
    counts = samples.slice.bincount(minlength=len(samples.slice_labels)).tolist()
    per_class = samples.y.bincount(minlength=samples.num_classes).tolist()
    n = len(samples.y)
    print(
        f"table: {n:,} rows, {len(counts)} slices ({samples.slice_labels[0]} … {samples.slice_labels[-1]}), "
        f"{table.input_shape[0]} input features\n"
        f"  per slice: min {min(counts):,}, max {max(counts):,}\n"
        f"  classes: {class_balance(dict(zip(table.class_names, per_class)))}\n"
        "  tables are read directly on every run: nothing was written. Run it with:\n"
        f"  python -m ctsim dataset=table {override_text('dataset.path', str(args.source))} "
        f"{override_text('dataset.time_column', args.time_column)} "
        f"{override_text('dataset.label_column', args.label_column)}"
        + (f" dataset.slice_by={slice_by}" if slice_by != "auto" else "")
        + (f" {override_text('dataset.feature_columns', features)}" if features else "")
        + (f" {override_text('dataset.time_format', args.time_format)}" if args.time_format else "")
        + (f" {override_text('dataset.classes', classes)}" if classes else "")
        + (f" dataset.missing={args.missing}" if args.missing != "error" else "")
        + " model=mlp"
    )
    return 0


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
