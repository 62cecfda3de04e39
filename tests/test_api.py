"""The Python API (``ctsim.run``, ``ctsim.load``), as a notebook uses it: the documented example, on tiny
sizes, returns polars frames; a bad input is an exception with the command line's one-line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import ctsim
from ctsim.app.execute import NoAccuracy
from ctsim.validation import ConfigError

TINY = ["dataset.size=0.05", "train.epochs=1", "progress=false", "output.plots=false"]


def test_the_notebook_example_returns_polars_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the example of the docs (ctsim.app.api's docstring), at a tiny size
    result = ctsim.run(["dataset=sea", "trigger=drift", *TINY])
    cost = result.cost.select("pipeline", "triggers", "composite_accuracy")
    again = ctsim.load(result.run_dir)

    assert result.run_dir.parent == Path("results/runs/drift")  # one pipeline, named after its trigger
    assert isinstance(cost, pl.DataFrame) and cost["pipeline"].to_list() == ["drift"]
    assert 0 < cost["composite_accuracy"].item() <= 1 and cost["triggers"].item() >= 1
    for name in ("evals", "generations", "cost", "metrics", "quality", "lineage", "skipped", "runs"):
        assert isinstance(getattr(result, name), pl.DataFrame), name
    assert {"pipeline", "seed", "generation", "slice", "metric", "value", "n"} <= set(result.evals.columns)
    slices = result.evals["slice"].n_unique()
    assert slices == 40 and result.generations.height == cost["triggers"].item()  # sea: 40 slices
    assert again.cost.equals(result.cost) and again.evals.equals(result.evals)
    assert result.status["status"] == "finished"
    assert result.status["overrides"][:2] == ["dataset=sea", "trigger=drift"]


def test_a_second_run_in_the_same_second_gets_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = [ctsim.run(["dataset=sea", "trigger=never", *TINY]) for _ in range(2)]
    assert runs[0].run_dir != runs[1].run_dir
    assert all(r.cost["pipeline"].to_list() == ["never"] for r in runs)


def test_the_run_folder_and_a_users_config_dir(tmp_path):
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "two.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /dataset: sea\nname: two\n"
        "population:\n  variants:\n    often: [trigger=time, trigger.every=5]\n    once: [trigger=never]\n"
    )
    out = tmp_path / "here"
    result = ctsim.run(["experiment=two", *TINY], config_dir=tmp_path / "my_conf", out_dir=out)
    assert result.run_dir == out and (out / "evals.parquet").is_file()
    assert sorted(result.cost["pipeline"].to_list()) == ["often", "once"]
    assert dict(result.generations.group_by("pipeline").len().rows()) == {"often": 8, "once": 1}


def test_bad_input_raises_the_command_lines_message_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unknown = r"trigger\.evry: unknown key; did you mean trigger\.every\?"
    with pytest.raises(ConfigError, match=unknown) as info:
        ctsim.run(["trigger.evry=3", "optimizer.lr=-1"])
    assert str(info.value).splitlines()[0] == "invalid config:"
    with pytest.raises(ConfigError, match=r"optimizer\.lr=-1: expected a number > 0"):
        ctsim.run(["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match="it already holds files"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("mine\n")
        ctsim.run(TINY, out_dir=tmp_path / "full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no results/ folder made
    with pytest.raises(FileNotFoundError, match="not a ctsim run directory"):
        ctsim.load(tmp_path / "full")


def test_import_ctsim_loads_nothing_heavy():
    code = "import sys, ctsim; print(sorted(m for m in ('torch', 'polars', 'hydra') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert callable(ctsim.run) and callable(ctsim.load)


def test_a_run_that_measured_no_accuracy_raises_with_the_reason(tmp_path):
    two_slices = ["dataset=sea", "dataset.slices=2", "dataset.change_points=[1]", "trigger.every=5", *TINY]
    with pytest.raises(NoAccuracy, match="time trained no model in the 2 slices"):
        ctsim.run(two_slices, out_dir=tmp_path / "two")
    assert ctsim.load(tmp_path / "two").cost["triggers"].to_list() == [0]  # its tables are kept
