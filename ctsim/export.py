"""``python -m ctsim.export tensorboard|mlflow RUN_DIR``: a finished run, in the tools people already use.

Both are optional extras (``pip install -e ".[export]"``): ctsim itself needs neither.

* **tensorboard** writes one TensorBoard run per pipeline and seed (``<out>/<pipeline>_seed<S>/``, by
  default ``RUN_DIR/tensorboard/``): the active model's accuracy per slice (``composite/accuracy``, the
  step is the slice), each generation's training loss (``train/final_loss``, the step is the
  generation), the cost columns (``cost/...``, step 0), and the accuracy matrix as an image
  (``matrix/accuracy``: generations down, slices across, white = 1). Open it with
  ``tensorboard --logdir RUN_DIR/tensorboard``.
* **mlflow** logs one MLflow run per pipeline and seed into a local store in the run folder (by
  default ``RUN_DIR/mlflow.db``, an SQLite file, with artifacts in ``RUN_DIR/mlartifacts``;
  ``--tracking-uri`` for another), in an experiment named after the run: the pipeline's settings and
  the run's config hash as params, the same metrics, and the pipeline's checkpoints as artifacts. Open
  it with ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db``. (MLflow 3 keeps its older
  ``./mlruns`` folder store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from ctsim.registry.layout import read_status

EXTRA = 'pip install -e ".[export]"'


class ExportError(Exception):
    """The run or the target cannot be exported; the message says why."""


def _finished(run_dir: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    record = read_status(run_dir)
    if record is None:
        raise ExportError(f"{run_dir} is not a ctsim run folder: it has no readable status.json")
    if record.get("status", "finished") != "finished":
        raise ExportError(
            f"{run_dir}: the run is {record['status']}, not finished; finish it first with "
            f"python -m ctsim resume {run_dir}"
        )
    tables = {t: pl.read_parquet(run_dir / f"{t}.parquet") for t in ("evals", "generations", "cost")}
    return record, tables


def _pipelines(tables: Mapping[str, pl.DataFrame]) -> list[tuple[str, int]]:
    return [tuple(r) for r in tables["cost"].select("pipeline", "seed").rows()]  # type: ignore[misc]


def composite_per_slice(evals: pl.DataFrame, pipeline: str, seed: int) -> list[tuple[int, float]]:
    """The active model's accuracy on each slice that has one (and a value)."""
    rows = evals.filter(
        pl.col("pipeline") == pipeline,
        pl.col("seed") == seed,
        pl.col("metric") == "accuracy",
        pl.col("active"),
        pl.col("value").is_not_null(),
    ).sort("slice")
    return list(zip(rows["slice"].to_list(), rows["value"].to_list()))


def accuracy_matrix(evals: pl.DataFrame, pipeline: str, seed: int) -> list[list[float]]:
    """Generations × slices; a slice without test data is 0."""
    rows = evals.filter(
        pl.col("pipeline") == pipeline, pl.col("seed") == seed, pl.col("metric") == "accuracy"
    )
    matrix = rows.sort("slice").pivot(on="slice", index="generation", values="value").sort("generation")
    return matrix.drop("generation").fill_null(0.0).rows()  # type: ignore[return-value]


def cost_metrics(cost: pl.DataFrame, pipeline: str, seed: int) -> dict[str, float]:
    row = cost.filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed).row(0, named=True)
    return {
        k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "seed" and v is not None
    }


def tensorboard(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the run's TensorBoard event files; the folder of each pipeline and seed."""
    run_dir = Path(run_dir)
    _, tables = _finished(run_dir)
    try:
        import torch
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ExportError(f"the TensorBoard export needs the tensorboard package ({e}): {EXTRA}") from None
    out = Path(out) if out is not None else run_dir / "tensorboard"
    folders = []
    for pipeline, seed in _pipelines(tables):
        folder = out / f"{pipeline}_seed{seed}"
        with SummaryWriter(log_dir=str(folder)) as writer:
            for s, value in composite_per_slice(tables["evals"], pipeline, seed):
                writer.add_scalar("composite/accuracy", value, global_step=s)
            gens = tables["generations"].filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)
            for g, loss in gens.select("generation", "final_loss").rows():
                if loss is not None:
                    writer.add_scalar("train/final_loss", loss, global_step=g)
            for name, value in cost_metrics(tables["cost"], pipeline, seed).items():
                writer.add_scalar(f"cost/{name}", value, global_step=0)
            matrix = torch.tensor(accuracy_matrix(tables["evals"], pipeline, seed), dtype=torch.float32)
            writer.add_image("matrix/accuracy", matrix.clamp(0, 1), global_step=0, dataformats="HW")
        folders.append(folder)
    return folders


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
    groups = ("trigger", "selection", "model", "optimizer", "schedule", "train")
    params = _flat({g: run.get(g, {}) for g in groups})
    params |= _flat(config.get("pipelines", {}).get(pipeline, {}))
    return params


def mlflow(run_dir: str | Path, tracking_uri: str | None = None) -> list[str]:
    """Log one MLflow run per pipeline and seed; their MLflow run ids."""
    run_dir = Path(run_dir).resolve()
    record, tables = _finished(run_dir)
    try:
        import mlflow as ml
    except ImportError as e:
        raise ExportError(f"the MLflow export needs the mlflow package ({e}): {EXTRA}") from None
    ml.set_tracking_uri(tracking_uri or f"sqlite:///{run_dir / 'mlflow.db'}")
    name = f"ctsim/{run_dir.parent.name}/{run_dir.name}"
    experiment = ml.get_experiment_by_name(name) or ml.get_experiment(
        ml.create_experiment(name, artifact_location=(run_dir / "mlartifacts").as_uri())
    )
    ids = []
    for pipeline, seed in _pipelines(tables):
        with ml.start_run(
            experiment_id=experiment.experiment_id, run_name=f"{pipeline}_seed{seed}"
        ) as active:
            ml.log_params(
                {
                    **pipeline_params(record, pipeline),
                    "pipeline": pipeline,
                    "seed": str(seed),
                    "ctsim.run": str(run_dir),
                    "ctsim.config_hash": str(record.get("config_hash")),
                }
            )
            for s, value in composite_per_slice(tables["evals"], pipeline, seed):
                ml.log_metric("composite_accuracy_slice", value, step=s)
            ml.log_metrics(cost_metrics(tables["cost"], pipeline, seed))
            gens = tables["generations"].filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)
            for path in gens["checkpoint"].drop_nulls():
                ml.log_artifact(str(run_dir / path), artifact_path="checkpoints")
            ids.append(active.info.run_id)
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctsim.export", description=__doc__.splitlines()[0])
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
        print(f"ctsim.export: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
