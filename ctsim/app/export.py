"""``ctsim export tensorboard|mlflow RUN_DIR``: a finished run, in the tools people already use.

Both are optional extras (``pip install -e ".[export]"``): ctsim itself needs neither. Both export the
same numbers, for each pipeline and seed:

* the active model's accuracy, macro-F1 and AUROC on each slice that has a value (``evals``: one step
  per slice);
* each generation's training loss (``generations.final_loss``: one step per generation);
* the numbers of ``cost.parquet`` and of ``metrics.parquet`` (BWT, FWT, forgetting, Eval-Fix,
  Eval-Stream; nulls left out), at step 0.

**tensorboard** writes one TensorBoard run per pipeline and seed (``<out>/<pipeline>_seed<S>/``, by
default ``RUN_DIR/tensorboard/``), tagged ``composite/accuracy``, ``composite/macro_f1``,
``composite/auroc``, ``train/final_loss``, ``cost/<column>`` and ``cl/<column>``, with the accuracy
matrix as an image (``matrix/accuracy``: generations down, slices across, white = 1). Open it with
``tensorboard --logdir RUN_DIR/tensorboard``.

**mlflow** logs one MLflow run per pipeline and seed into a local store in the run folder (by default
``RUN_DIR/mlflow.db``, an SQLite file, with artifacts in ``RUN_DIR/mlartifacts``; ``--tracking-uri``
for another), in an experiment named after the run: the pipeline's settings, ``pipeline``, ``seed``,
the run folder (``ctsim.run``) and its config hash as params; the metrics ``composite_<metric>_slice``,
``train_final_loss`` and the tables' column names; the pipeline's checkpoints as artifacts. Open it
with ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db``. (MLflow 3 keeps its older
``./mlruns`` folder store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``.)

An export is written once: a second export of the same run into the same place stops with an error
rather than add a second copy of every value (TensorBoard and MLflow would both show it twice).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ctsim.app.compose import PIPELINE_GROUPS
from ctsim.registry.layout import METRICS, read_status

EXTRA = 'pip install -e ".[export]"'
REQUIRED = ("evals", "generations", "cost")
NO_METRICS = pl.DataFrame(
    schema={"pipeline": pl.String, "seed": pl.Int64}
)  # runs from before metrics.parquet


class ExportError(Exception):
    """The run or the target cannot be exported; the message says why."""


def _finished(run_dir: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such folder")
    record = read_status(run_dir)
    if record is None:
        raise ExportError(f"{run_dir} is not a ctsim run folder: it has no readable status.json")
    status = record.get("status", "finished")
    if status == "running":
        raise ExportError(
            f"{run_dir}: the run is still running; export it once it has finished (if its process "
            f"is gone, finish it with python -m ctsim resume {run_dir})"
        )
    if status != "finished":
        raise ExportError(
            f"{run_dir}: the run is {status}, not finished; finish it first with "
            f"python -m ctsim resume {run_dir}"
        )
    missing = [f"{t}.parquet" for t in REQUIRED if not (run_dir / f"{t}.parquet").exists()]
    if missing:
        raise ExportError(f"{run_dir}: the run is finished but its folder is missing {', '.join(missing)}")
    tables = {t: pl.read_parquet(run_dir / f"{t}.parquet") for t in REQUIRED}
    metrics = run_dir / "metrics.parquet"
    tables["metrics"] = pl.read_parquet(metrics) if metrics.exists() else NO_METRICS
    return record, tables


def _pipelines(tables: Mapping[str, pl.DataFrame]) -> list[tuple[str, int]]:
    return [tuple(r) for r in tables["cost"].select("pipeline", "seed").rows()]  # type: ignore[misc]


def composite_per_slice(
    evals: pl.DataFrame, pipeline: str, seed: int, metric: str = "accuracy"
) -> list[tuple[int, float]]:
    """The active model's ``metric`` on each slice that has one (and a value)."""
    rows = evals.filter(
        pl.col("pipeline") == pipeline,
        pl.col("seed") == seed,
        pl.col("metric") == metric,
        pl.col("active"),
        pl.col("value").is_not_null(),
    ).sort("slice")
    return list(zip(rows["slice"].to_list(), rows["value"].to_list()))


def final_losses(generations: pl.DataFrame, pipeline: str, seed: int) -> list[tuple[int, float]]:
    """Each generation's mean training loss of its last epoch, where it has one."""
    rows = generations.filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)
    return rows.drop_nulls("final_loss").sort("generation").select("generation", "final_loss").rows()


def accuracy_matrix(evals: pl.DataFrame, pipeline: str, seed: int) -> list[list[float]]:
    """Generations × slices; a slice without test data is 0."""
    rows = evals.filter(
        pl.col("pipeline") == pipeline, pl.col("seed") == seed, pl.col("metric") == "accuracy"
    )
    matrix = rows.sort("slice").pivot(on="slice", index="generation", values="value").sort("generation")
    return matrix.drop("generation").fill_null(0.0).rows()  # type: ignore[return-value]


def row_numbers(table: pl.DataFrame, pipeline: str, seed: int) -> dict[str, float]:
    """The numbers in the table's row of the pipeline and seed (``cost``, ``metrics``), nulls left out."""
    rows = table.filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)
    if rows.is_empty():
        return {}
    row = rows.row(0, named=True)
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "seed"}


def _unwritten(folders: Iterable[Path], out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot write the TensorBoard export to {out}: it is a file, not a folder")
    written = [f for f in folders if f.exists() and (not f.is_dir() or any(f.iterdir()))]
    if written:
        raise ExportError(
            f"{out} already holds an export: {', '.join(f.name for f in written)} (a second one would "
            "show every value twice); remove those folders or pass another --out"
        )


def _write_events(writer, tables: Mapping[str, pl.DataFrame], pipeline: str, seed: int) -> None:
    for metric in METRICS:
        for s, value in composite_per_slice(tables["evals"], pipeline, seed, metric):
            writer.add_scalar(f"composite/{metric}", value, global_step=s)
    for g, loss in final_losses(tables["generations"], pipeline, seed):
        writer.add_scalar("train/final_loss", loss, global_step=g)
    for table, prefix in (("cost", "cost"), ("metrics", "cl")):
        for name, value in row_numbers(tables[table], pipeline, seed).items():
            writer.add_scalar(f"{prefix}/{name}", value, global_step=0)
    matrix = np.asarray(accuracy_matrix(tables["evals"], pipeline, seed), dtype=np.float32)
    writer.add_image("matrix/accuracy", matrix.clip(0, 1), global_step=0, dataformats="HW")


def tensorboard(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the run's TensorBoard event files; the folder of each pipeline and seed."""
    run_dir = Path(run_dir)
    _, tables = _finished(run_dir)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ExportError(f"the TensorBoard export needs the tensorboard package ({e}): {EXTRA}") from None
    out = Path(out) if out is not None else run_dir / "tensorboard"
    folders = {(p, s): out / f"{p}_seed{s}" for p, s in _pipelines(tables)}
    _unwritten(folders.values(), out)
    try:
        for (pipeline, seed), folder in folders.items():
            with SummaryWriter(log_dir=str(folder)) as writer:
                _write_events(writer, tables, pipeline, seed)
    except OSError as e:
        raise ExportError(f"cannot write the TensorBoard export to {out}: {e}") from e
    return list(folders.values())


def _flat(node: object, prefix: str = "") -> dict[str, str]:
    if isinstance(node, Mapping):
        out: dict[str, str] = {}
        for k, v in node.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): str(node)}


def pipeline_params(record: Mapping, pipeline: str) -> dict[str, str]:
    """The pipeline's settings: the run's pipeline groups, with its variant's changes over them."""
    config = record.get("config", {})
    run = config.get("run", {})
    changes = config.get("pipelines", {}).get(pipeline, {})
    groups = {}
    for g in PIPELINE_GROUPS:
        own = changes.get(g, {})
        # a variant that changes a group's class records that group whole (see pipeline_differences)
        groups[g] = own if "_target_" in own else {**run.get(g, {}), **own}
    return _flat(groups)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _metrics(tables: Mapping[str, pl.DataFrame], pipeline: str, seed: int) -> list[tuple[str, float, int]]:
    """(key, value, step): the same numbers as the TensorBoard export."""
    out = [
        (f"composite_{metric}_slice", value, s)
        for metric in METRICS
        for s, value in composite_per_slice(tables["evals"], pipeline, seed, metric)
    ]
    out += [("train_final_loss", loss, g) for g, loss in final_losses(tables["generations"], pipeline, seed)]
    for table in ("cost", "metrics"):
        out += [(k, v, 0) for k, v in row_numbers(tables[table], pipeline, seed).items()]
    return out


def _logged(client, experiment_id: str, run_dir: Path) -> list[str]:
    """The ids of the store's active MLflow runs that came from ``run_dir``."""
    ids, token = [], None
    while True:
        page = client.search_runs([experiment_id], page_token=token)
        ids += [r.info.run_id for r in page if r.data.params.get("ctsim.run") == str(run_dir)]
        token = page.token
        if not token:
            return ids


def _log_run(
    client,
    experiment_id: str,
    record: Mapping,
    tables: Mapping[str, pl.DataFrame],
    run_dir: Path,
    pipeline: str,
    seed: int,
) -> str:
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=f"{pipeline}_seed{seed}").info.run_id
    params = {
        **pipeline_params(record, pipeline),
        "pipeline": pipeline,
        "seed": str(seed),
        "ctsim.run": str(run_dir),
        "ctsim.config_hash": str(record.get("config_hash")),
    }
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, s) for k, v, s in _metrics(tables, pipeline, seed)]
    try:
        for chunk in _chunks([Param(k, v) for k, v in params.items()], 100):  # MLflow's limits per batch
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=chunk)
        gens = tables["generations"].filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)
        for path in gens["checkpoint"].drop_nulls():
            client.log_artifact(run_id, str(run_dir / path), artifact_path="checkpoints")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def mlflow(run_dir: str | Path, tracking_uri: str | None = None) -> list[str]:
    """Log one MLflow run per pipeline and seed; their MLflow run ids."""
    run_dir = Path(run_dir).resolve()
    record, tables = _finished(run_dir)
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ExportError(f"the MLflow export needs the mlflow package ({e}): {EXTRA}") from None
    uri = tracking_uri or f"sqlite:///{run_dir / 'mlflow.db'}"
    name = f"ctsim/{run_dir.parent.name}/{run_dir.name}"
    try:
        # a client, not mlflow's module-level functions: they would change the process's tracking URI
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(name, artifact_location=(run_dir / "mlartifacts").as_uri())
        )
        logged = _logged(client, experiment_id, run_dir)
        if logged:
            raise ExportError(
                f"{uri} already holds {len(logged)} MLflow run(s) of {run_dir} (experiment {name}); a "
                "second export would show every value twice: delete them (mlflow runs delete --run-id "
                "ID) or pass another --tracking-uri"
            )
        return [_log_run(client, experiment_id, record, tables, run_dir, p, s) for p, s in _pipelines(tables)]
    except (MlflowException, OSError) as e:
        raise ExportError(f"MLflow at {uri}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctsim export", description=__doc__.splitlines()[0])
    tools = parser.add_subparsers(dest="tool", required=True)
    tb = tools.add_parser("tensorboard", help="TensorBoard event files, one run per pipeline and seed")
    tb.add_argument("run_dir")
    tb.add_argument("--out", help="where to write (default RUN_DIR/tensorboard)")
    mf = tools.add_parser("mlflow", help="one MLflow run per pipeline and seed, in a local store")
    mf.add_argument("run_dir")
    mf.add_argument("--tracking-uri", help="default: sqlite:///RUN_DIR/mlflow.db")
    args = parser.parse_args(argv)
    try:
        if args.tool == "tensorboard":
            folders = tensorboard(args.run_dir, args.out)
            print(f"{len(folders)} TensorBoard run(s) in {Path(folders[0]).parent if folders else args.out}")
        else:
            ids = mlflow(args.run_dir, args.tracking_uri)
            print(f"{len(ids)} MLflow run(s) logged")
    except (ExportError, FileNotFoundError) as e:
        print(f"ctsim export: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
