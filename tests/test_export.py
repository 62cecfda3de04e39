"""``ctsim export``, read back by each tool's own reader: TensorBoard's event reader and
MLflow's client on the local store, and compared with the run's own tables. The tests that need the
optional extra (``pip install -e ".[export]"``) are skipped where it is not installed, as in CI."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from ctsim.app.export import ExportError, main, pipeline_params, tensorboard
from ctsim.app.export import mlflow as mlflow_export

from .conftest import run, small

TINY = ["dataset=sea", "model=mlp", "dataset.size=0.1", "population.only=[yearly,never]", "train.epochs=1"]
PAIRS = [("never", 0), ("never", 1), ("yearly", 0), ("yearly", 1)]
NAMES = [f"{p}_seed{s}" for p, s in PAIRS]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    out = tmp / "run"
    run(small(tmp, *TINY, "experiment=quickstart", "population.seeds=[0,1]"), out)
    return out


@pytest.fixture
def event_accumulator():
    return pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


@pytest.fixture
def mlflow():
    return pytest.importorskip("mlflow")


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctsim.app.export", *args], capture_output=True, text=True)


def expected(run_dir, pipeline: str, seed: int) -> dict[str, list[tuple[int, float]]]:
    """Every number of one pipeline and seed in the run's tables, named as in TensorBoard:
    the active model's value per slice (step: slice), each generation's loss (step: generation),
    and the numbers of ``cost`` and ``metrics`` (step 0; nulls left out)."""
    mine = (pl.col("pipeline") == pipeline) & (pl.col("seed") == seed)
    evals = pl.read_parquet(run_dir / "evals.parquet").filter(mine, pl.col("active"))
    out = {}
    for metric in ("accuracy", "macro_f1", "auroc"):
        rows = evals.filter(pl.col("metric") == metric).drop_nulls("value").sort("slice")
        out[f"composite/{metric}"] = list(zip(rows["slice"], rows["value"]))
    gens = pl.read_parquet(run_dir / "generations.parquet").filter(mine).drop_nulls("final_loss")
    out["train/final_loss"] = list(zip(gens["generation"], gens["final_loss"]))
    for table, prefix in (("cost", "cost"), ("metrics", "cl")):
        row = pl.read_parquet(run_dir / f"{table}.parquet").filter(mine).row(0, named=True)
        for k, v in row.items():
            if k not in ("pipeline", "seed") and isinstance(v, (int, float)):
                out[f"{prefix}/{k}"] = [(0, float(v))]
    return out


def assert_series_equal(got: dict, want: dict, rel: float) -> None:
    assert sorted(got) == sorted(want)
    for name, points in want.items():
        assert [s for s, _ in got[name]] == [s for s, _ in points], name
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in points], rel=rel), name


def test_the_expected_numbers_cover_every_metric_table(finished):
    want = expected(finished, "yearly", 1)
    assert all(len(want[f"composite/{m}"]) > 10 for m in ("accuracy", "macro_f1", "auroc"))
    assert {"cl/bwt", "cl/fwt", "cl/forgetting", "cl/eval_fix_id", "cl/eval_stream"} <= set(want)
    assert len(want["train/final_loss"]) > 10 and "cost/train_flops" in want


def tensorboard_scalars(event_accumulator, folder) -> tuple[dict, object]:
    reader = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    scalars = {t: [(e.step, e.value) for e in reader.Scalars(t)] for t in reader.Tags()["scalars"]}
    return scalars, reader.Images("matrix/accuracy")


# the extra's fixture first: without it, the test is skipped before the run is made
def test_tensorboard_export_equals_the_tables_and_is_not_written_twice(event_accumulator, finished, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    result = export("tensorboard", str(finished), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == NAMES
    evals = pl.read_parquet(finished / "evals.parquet")
    first = {}
    for pipeline, seed in PAIRS:
        scalars, images = tensorboard_scalars(event_accumulator, tmp_path / f"{pipeline}_seed{seed}")
        assert_series_equal(scalars, expected(finished, pipeline, seed), rel=1e-6)  # float32 in the events
        first[pipeline, seed] = scalars
        rows = evals.filter(
            pl.col("pipeline") == pipeline, pl.col("seed") == seed, pl.col("metric") == "accuracy"
        )
        matrix = np.zeros((rows["generation"].max() + 1, evals["slice"].max() + 1))
        for g, s, v in rows.drop_nulls("value").select("generation", "slice", "value").rows():
            matrix[g, s] = v
        assert len(images) == 1
        pixels = np.asarray(Image.open(io.BytesIO(images[0].encoded_image_string)).convert("L"), dtype=float)
        assert pixels.shape == matrix.shape
        assert np.abs(pixels - matrix * 255).max() <= 1

    again = export("tensorboard", str(finished), "--out", str(tmp_path))
    assert again.returncode == 2
    assert "already holds an export" in again.stderr and "Traceback" not in again.stderr
    for pipeline, seed in PAIRS:
        folder = tmp_path / f"{pipeline}_seed{seed}"
        assert len(list(folder.iterdir())) == 1  # one event file: nothing was added
        assert tensorboard_scalars(event_accumulator, folder)[0] == first[pipeline, seed]


def mlflow_series(client, run, cl: set[str]) -> dict[str, list[tuple[int, float]]]:
    """The run's metrics, named as in TensorBoard (see ``ctsim.app.export``); ``cl``: the columns of
    ``metrics.parquet``."""
    out = {}
    for key in run.data.metrics:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        if key.startswith("composite_") and key.endswith("_slice"):
            name = f"composite/{key.removeprefix('composite_').removesuffix('_slice')}"
        elif key == "train_final_loss":
            name = "train/final_loss"
        elif key in cl:
            name = f"cl/{key}"
        else:
            name = f"cost/{key}"
        out[name] = history
    return out


def test_mlflow_export_equals_the_tables_and_is_not_logged_twice(mlflow, finished):
    result = export("mlflow", str(finished))
    assert result.returncode == 0, result.stderr
    uri = f"sqlite:///{finished / 'mlflow.db'}"  # the default: a local store in the run folder
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.search_experiments(filter_string="name LIKE 'ctsim/%'")[0]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == NAMES
    cl = set(pl.read_parquet(finished / "metrics.parquet").columns)
    series = {}
    for pipeline, seed in PAIRS:
        logged = runs[f"{pipeline}_seed{seed}"]
        assert logged.info.status == "FINISHED"
        series[pipeline, seed] = mlflow_series(client, logged, cl)
        assert_series_equal(series[pipeline, seed], expected(finished, pipeline, seed), rel=1e-12)
        assert logged.data.params["pipeline"] == pipeline and logged.data.params["seed"] == str(seed)
        assert logged.data.params["ctsim.run"] == str(finished.resolve())
    yearly, never = runs["yearly_seed1"], runs["never_seed0"]
    assert yearly.data.params["trigger.every"] == "1"  # the variant's own setting
    assert never.data.params["trigger._target_"] == "ctsim.triggers.NeverTrigger"
    assert "trigger.every" not in never.data.params  # a TimeTrigger setting: not the never pipeline's
    artifacts = [a.path for a in client.list_artifacts(yearly.info.run_id, "checkpoints")]
    gens = pl.read_parquet(finished / "generations.parquet").filter(
        pl.col("pipeline") == "yearly", pl.col("seed") == 1
    )
    assert len(artifacts) == gens["checkpoint"].drop_nulls().len() > 0

    again = export("mlflow", str(finished))
    assert again.returncode == 2
    assert "already holds 4 MLflow run(s) of" in again.stderr and "Traceback" not in again.stderr
    rerun = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in rerun) == NAMES
    assert {
        (r.data.params["pipeline"], int(r.data.params["seed"])): mlflow_series(client, r, cl) for r in rerun
    } == (series)


def test_pipeline_params_take_a_swapped_group_whole():
    record = {
        "config": {
            "run": {
                "trigger": {"_target_": "ctsim.triggers.TimeTrigger", "every": 1},
                "optimizer": {"_target_": "ctsim.engine.optim.SGD", "lr": 0.01, "momentum": 0.9},
            },
            "pipelines": {
                "never": {"trigger": {"_target_": "ctsim.triggers.NeverTrigger"}},
                "fast": {"optimizer": {"lr": 0.1}},
            },
        }
    }
    never = pipeline_params(record, "never")
    assert never["trigger._target_"] == "ctsim.triggers.NeverTrigger" and "trigger.every" not in never
    assert never["optimizer.lr"] == "0.01"
    fast = pipeline_params(record, "fast")
    assert fast["optimizer.lr"] == "0.1" and fast["optimizer.momentum"] == "0.9"
    assert fast["trigger.every"] == "1"


@pytest.mark.parametrize(
    "status, message",
    [
        ("interrupted", "the run is interrupted, not finished; finish it first with python -m ctsim resume"),
        ("running", "the run is still running; export it once it has finished"),
    ],
)
def test_an_unfinished_run_is_one_clear_line(tmp_path, status, message):
    (tmp_path / "status.json").write_text(f'{{"status": "{status}"}}')
    for export_to in (tensorboard, mlflow_export):
        with pytest.raises(ExportError, match=message):
            export_to(tmp_path)


def test_a_missing_folder_or_table_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(ExportError, match="no such folder"):
        tensorboard(tmp_path / "nope")
    (tmp_path / "status.json").write_text('{"status": "finished"}')
    with pytest.raises(ExportError, match=r"missing evals\.parquet, generations\.parquet, cost\.parquet"):
        mlflow_export(tmp_path)
    assert main(["tensorboard", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"ctsim export: {tmp_path}: the run is finished but")


def test_a_target_it_cannot_write_is_one_clear_line(event_accumulator, mlflow, finished, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["tensorboard", str(finished), "--out", str(tmp_path / "a_file")]) == 2
    assert capsys.readouterr().err.startswith("ctsim export: cannot write the TensorBoard export")
    assert main(["mlflow", str(finished), "--tracking-uri", "nosuchscheme://x"]) == 2
    assert capsys.readouterr().err.startswith("ctsim export: MLflow at nosuchscheme://x:")


def test_a_missing_extra_is_one_clear_line(finished, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the extra
    for name in ("mlflow", "mlflow.exceptions", "mlflow.tracking"):  # earlier tests may have imported them
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ExportError, match=r'needs the tensorboard package .*pip install -e "\.\[export\]"'):
        tensorboard(finished)
    with pytest.raises(ExportError, match=r'needs the mlflow package .*pip install -e "\.\[export\]"'):
        mlflow_export(finished)
