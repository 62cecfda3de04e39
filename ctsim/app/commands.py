"""``ctsim`` (or ``python -m ctsim``): one command, with subcommands.

    ctsim [run] [experiment=NAME] [group=option ...] [key=value ...]   run (the default subcommand)
    ctsim resume RUN_DIR                                                finish an interrupted run
    ctsim reproduce RUN_DIR --pipeline P --seed S --generation K       retrain one generation, compare
    ctsim compare RUN_OR_SWEEP_DIR ... [--out DIR]                      compare runs
    ctsim query SQL [RUN_DIR ...]                                       SQL over runs' tables
    ctsim oracle RUN_DIR                                                hindsight-optimal trigger schedule
    ctsim export tensorboard|mlflow RUN_DIR                             a run, in TensorBoard or MLflow
    ctsim datasets prepare|list|info ...                                prepare a dataset from your files
    ctsim bench [--cases ...]                                           benchmark the engines

Each subcommand's options are declared here, with the standard library only, so ``ctsim SUB --help``
answers before torch, polars or Hydra load; the arguments are checked here, then handed unchanged to the
implementation (``tests/test_commands.py`` checks that both declare the same options).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

# name: (one line for ``ctsim --help``, "module:function" that runs it, the function takes the argv given)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run a simulation (the default: ctsim experiment=NAME ...)", "ctsim.app.cli:main"),
    "resume": ("finish an interrupted or killed run from what it saved", "ctsim.app.resume:main"),
    "reproduce": ("train one generation again and compare it with its checkpoint", "ctsim.app.resume:main"),
    "compare": (
        "compare runs: a table with 95% CIs, plots, report.html (a sweep does it at its end)",
        "ctsim.reports.compare:main",
    ),
    "query": ("SQL over the tables of runs (default: all under results/)", "ctsim.registry.read:main"),
    "oracle": (
        "the hindsight-optimal trigger schedule and each pipeline's regret",
        "ctsim.reports.oracle:main",
    ),
    "export": ("a finished run, in TensorBoard or MLflow", "ctsim.app.export:main"),
    "datasets": (
        "prepare a dataset from your files (yearbook, huffpost, ...); list, info",
        "ctsim.datasets.prepare:main",
    ),
    "bench": ("benchmark the batched engine's routes against the sequential engine", "ctsim.app.bench:main"),
}
USAGE = {
    "resume": "ctsim resume RUN_DIR",
    "reproduce": "ctsim reproduce RUN_DIR --pipeline P --seed S --generation K",
    "compare": "ctsim compare RUN_OR_SWEEP_DIR ... [--out DIR]",
    "query": "ctsim query SQL [RUN_DIR ...]",
    "oracle": "ctsim oracle RUN_DIR",
    "export": "ctsim export tensorboard|mlflow RUN_DIR",
    "datasets": "ctsim datasets prepare|list|info ...",
    "bench": "ctsim bench [--cases ...]",
}
BENCH_CASES = ("populations", "routes", "launch", "small_mlps", "eval", "ragged", "compile")  # bench.CASES


def _resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder (results/runs/<name>/<time>/)")


def _reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder (results/runs/<name>/<time>/)")
    p.add_argument("--pipeline", required=True, help="the pipeline's name (cost.parquet's pipeline column)")
    p.add_argument("--seed", type=int, required=True, help="the pipeline's seed (population.seeds)")
    p.add_argument(
        "--generation", type=int, required=True, help="the generation to train again (0 = the first model)"
    )


def _compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run folders, sweep folders, or folders above them")
    p.add_argument("--out", help="where to write (default: DIR/comparison for one folder)")
    p.add_argument("--price-per-hour", type=float, default=2.0, help="dollars per device-hour (default 2.0)")
    p.add_argument(
        "--candidates", help="the pipeline that trains at every slice, for the oracle (default: found)"
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="family-wise error rate of the paired tests that group pipelines (default 0.05)",
    )


def _query(p: argparse.ArgumentParser) -> None:
    p.add_argument("sql", help='e.g. "SELECT pipeline, AVG(composite_accuracy) FROM cost GROUP BY pipeline"')
    p.add_argument("runs", nargs="*", default=["results"], help="run folders, folders above them, or globs")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print CSV")
    out.add_argument("--markdown", action="store_true", help="print a markdown table")
    out.add_argument("--parquet", metavar="FILE", help="write the result to FILE (parquet)")


def _oracle(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run folder (results/runs/<name>/<time>)")
    p.add_argument("--candidates", help="the variant that trains at every slice (default: found)")
    p.add_argument("--out", help="where to write (default: RUN_DIR/oracle)")


def _export(p: argparse.ArgumentParser) -> None:
    tools = p.add_subparsers(dest="tool", required=True)
    tb = tools.add_parser("tensorboard", help="TensorBoard event files, one run per pipeline and seed")
    tb.add_argument("run_dir")
    tb.add_argument("--out", help="where to write (default RUN_DIR/tensorboard)")
    mf = tools.add_parser("mlflow", help="one MLflow run per pipeline and seed, in a local store")
    mf.add_argument("run_dir")
    mf.add_argument("--tracking-uri", help="default: sqlite:///RUN_DIR/mlflow.db")


def _datasets(p: argparse.ArgumentParser) -> None:
    commands = p.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser(
        "prepare", help="convert a dataset's files into ctsim's cache (ctsim datasets prepare --help: which)"
    )
    prepare.add_argument("rest", nargs=argparse.REMAINDER, help="NAME --from PATH ...")
    for name, text in (("list", "list the prepared datasets under a data root"), ("info", "summarise one")):
        sub = commands.add_parser(name, help=text)
        if name == "info":
            sub.add_argument("name", help="the prepared dataset's folder name")
        sub.add_argument("--root", default="datasets", help="data root (default: datasets)")


def _bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", nargs="+", default=list(BENCH_CASES[:-1]), choices=BENCH_CASES)
    p.add_argument("--models", type=int, nargs="+", default=[1, 8, 64, 256], help="population sizes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--samples", type=int, default=256, help="training samples per model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--test", type=int, default=1024, help="shared test samples for evaluation")
    p.add_argument("--eval-batch", type=int, default=64, help="test samples per forward pass")
    p.add_argument(
        "--eval-models", type=int, default=None, help="models of the eval case (1000 on CUDA, 16 on CPU)"
    )
    p.add_argument("--route-models", type=int, default=16, help="models per kind in the routes case")
    p.add_argument("--compile", action="store_true", help="add the batched engine with compile=true")
    p.add_argument("--loop", action="store_true", help="add the loop route on CUDA too (always on CPU)")
    p.add_argument("--out", default="results/bench", help="where to write (default results/bench)")
    p.add_argument(
        "--eval-samples", type=int, default=3719, help="samples of the eval case (portraits: 3719)"
    )
    p.add_argument("--jsonl", help="also append each row to this file as a JSON line when it is measured")
    p.add_argument(
        "--ragged-models", type=int, nargs="+", default=[8, 64, 256], help="ragged population sizes"
    )
    p.add_argument("--ragged-model", default="yearbooknet", choices=["yearbooknet", "mlp"])
    p.add_argument("--ragged-sizes", default="triggers", choices=["triggers", "sea_quickstart"])
    p.add_argument("--ragged-epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="interleaved timings per engine (medians)")
    p.add_argument("--compile-models", type=int, nargs="+", default=[1, 8, 64], help="compile case sizes")
    p.add_argument("--compile-model", default="yearbooknet", choices=["yearbooknet", "mlp"])
    p.add_argument(
        "--compile-backend", default="inductor", help="its torch.compile backend; eager: trace only"
    )


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "resume": _resume,
    "reproduce": _reproduce,
    "compare": _compare,
    "query": _query,
    "oracle": _oracle,
    "export": _export,
    "datasets": _datasets,
    "bench": _bench,
}


def parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of subcommand ``name`` (standard library only)."""
    p = argparse.ArgumentParser(
        prog=f"ctsim {name}", description=COMMANDS[name][0][0].upper() + COMMANDS[name][0][1:] + "."
    )
    ARGUMENTS[name](p)
    return p


def implementation(name: str) -> Callable:
    """The function that runs subcommand ``name`` (imported now: this is what loads torch and polars)."""
    module, function = COMMANDS[name][1].split(":")
    return getattr(importlib.import_module(module), function)
