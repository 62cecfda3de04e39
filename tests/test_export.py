"""``python -m ctsim.export``, read back by each tool's own reader: TensorBoard's event reader and
MLflow's client on the local store. Skipped where the optional extra is not installed
(``pip install -e ".[export]"``)."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from ctsim.export import ExportError, composite_per_slice, tensorboard
from ctsim.export import mlflow as mlflow_export

from .conftest import run, small

TINY = ["dataset=sea", "model=mlp", "dataset.size=0.1", "population.only=[yearly,never]", "train.epochs=1"]


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


# the extra's fixture first: without it, the test is skipped before the run is made
def test_tensorboard_scalars_and_matrices_read_back_with_its_event_reader(
    event_accumulator, finished, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-m", "ctsim.export", "tensorboard", str(finished), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    evals = pl.read_parquet(finished / "evals.parquet")
    cost = pl.read_parquet(finished / "cost.parquet")
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == ["never_seed0", "never_seed1", "yearly_seed0", "yearly_seed1"]
    for pipeline, seed in (("yearly", 1), ("never", 0)):
        reader = event_accumulator.EventAccumulator(
            str(tmp_path / f"{pipeline}_seed{seed}"), size_guidance={"scalars": 0, "images": 0}
        )
        reader.Reload()
        got = [(e.step, e.value) for e in reader.Scalars("composite/accuracy")]
        want = composite_per_slice(evals, pipeline, seed)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)
        flops = cost.filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)["train_flops"][0]
        assert reader.Scalars("cost/train_flops")[0].value == pytest.approx(flops, rel=1e-6)
        image = reader.Images("matrix/accuracy")[0]
        generations = evals.filter(pl.col("pipeline") == pipeline, pl.col("seed") == seed)[
            "generation"
        ].n_unique()
        assert (image.height, image.width) == (generations, evals["slice"].n_unique())


def test_mlflow_runs_read_back_with_its_client(mlflow, finished, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ctsim.export", "mlflow", str(finished)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    uri = f"sqlite:///{finished / 'mlflow.db'}"  # the default: a local store in the run folder
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.search_experiments(filter_string="name LIKE 'ctsim/%'")[0]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["never_seed0", "never_seed1", "yearly_seed0", "yearly_seed1"]
    evals = pl.read_parquet(finished / "evals.parquet")
    cost = pl.read_parquet(finished / "cost.parquet")
    yearly = runs["yearly_seed1"]
    assert yearly.data.params["pipeline"] == "yearly" and yearly.data.params["seed"] == "1"
    assert yearly.data.params["trigger.every"] == "1"  # the variant's own setting
    assert runs["never_seed0"].data.params["trigger._target_"] == "ctsim.triggers.NeverTrigger"
    history = client.get_metric_history(yearly.info.run_id, "composite_accuracy_slice")
    want = composite_per_slice(evals, "yearly", 1)
    got = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])
    row = cost.filter(pl.col("pipeline") == "yearly", pl.col("seed") == 1)
    assert yearly.data.metrics["composite_accuracy"] == pytest.approx(row["composite_accuracy"][0])
    artifacts = [a.path for a in client.list_artifacts(yearly.info.run_id, "checkpoints")]
    gens = pl.read_parquet(finished / "generations.parquet").filter(
        pl.col("pipeline") == "yearly", pl.col("seed") == 1
    )
    assert len(artifacts) == gens["checkpoint"].drop_nulls().len() > 0


def test_an_unfinished_run_is_one_clear_line(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "interrupted"}')
    for export in (tensorboard, mlflow_export):
        with pytest.raises(ExportError, match="the run is interrupted, not finished; finish it first with"):
            export(tmp_path)


def test_a_missing_extra_is_one_clear_line(finished, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the extra
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ExportError, match=r'needs the tensorboard package .*pip install -e "\.\[export\]"'):
        tensorboard(finished)
    with pytest.raises(ExportError, match=r'needs the mlflow package .*pip install -e "\.\[export\]"'):
        mlflow_export(finished)
