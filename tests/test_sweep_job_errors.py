"""A sweep in which one job gives no result, as a user types it: the jobs after it still run, the
sweep ends with the comparison of those that did and exit code 1, and the failed job is named with
what was wrong, without a traceback. Also ``ctsim compare`` on a folder that does not exist."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ctsim.reports.compare import main

from .conftest import cli, own_experiment
from .test_compare import EXPERIMENT


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    return own_experiment(tmp_path_factory.mktemp("sweep_errors"), "tiny", EXPERIMENT)


def sweep(user: Path, name: str, *args: str):
    out = user / "sweeps" / name
    common = ["--config-dir", "configs", "-m", "experiment=tiny", f"dataset.root={user / 'data'}"]
    return out, cli([*common, *args, f"hydra.sweep.dir={out}"], cwd=user)


def status(job: Path) -> str:
    return json.loads((job / "status.json").read_text())["status"]


@pytest.fixture(scope="module")
def window_sweep(user):
    """Job 1's drift window is larger than the stream: found once its data is loaded, after the start-up
    checks (which pass every job)."""
    return sweep(user, "window", "trigger=drift", "trigger.window=100,5000,200")


def test_a_value_the_data_cannot_serve_stops_only_its_job(user, window_sweep):
    """Job 2 still runs; the comparison labels the other two by their window and lists job 1 with the
    reason; the sweep exits with code 1 naming job 1."""
    out, done = window_sweep
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert status(out / "0") == "finished" and status(out / "2") == "finished"
    assert not (out / "1" / "status.json").exists()
    expected = "tiny:trigger.window=5000: expected at most the stream's"  # pipeline:key=value
    assert expected in done.stderr
    said = done.stderr.split("1 sweep job(s) gave no result:")[1]
    assert f"{out.relative_to(user) / '1'}: no run was written: invalid config: {expected}" in said
    table = pl.read_parquet(out / "comparison" / "compare.parquet")
    assert sorted(table["pipeline"]) == ["trigger.window=100", "trigger.window=200"]
    md = (out / "comparison" / "compare.md").read_text()
    assert f"`{out / '1'}`: no run was written (" in md and expected in md


def test_a_job_whose_trigger_never_fires_does_not_stop_the_sweep(user):
    """Job 0 trains no model (its trigger never fires): it is reported and the sweep goes on to job 1."""
    out, done = sweep(user, "never_fires", "trigger=amount", "trigger.every=100000,50")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert status(out / "0") == "finished" and status(out / "1") == "finished"
    said = done.stderr.split("sweep job(s) gave no result:")[1]
    assert f"{out.relative_to(user) / '0'}: no pipeline has an accuracy: tiny trained no model" in said
    table = pl.read_parquet(out / "comparison" / "compare.parquet").sort("pipeline")
    assert table["pipeline"].to_list() == ["trigger.every=100000", "trigger.every=50"]
    assert table["accuracy"][0] is None and table["accuracy"][1] > 0.5


def test_compare_on_a_folder_that_does_not_exist_says_so(tmp_path, capsys):
    missing = tmp_path / "no_such_sweep"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"no such folder: {missing}" in err and "--out" not in err
    assert not missing.exists()


def test_a_comparison_that_cannot_rank_its_pipelines_says_so(window_sweep, tmp_path, capsys):
    """Two drift windows, one seed each, that the paired test cannot tell apart: the sweep's console,
    compare.md and report.html say there is no ranking and what would give one."""
    out, done = window_sweep
    said = "No ranking: the paired tests cannot tell any of these 2 pipelines from the best"
    assert said in done.stdout
    assert "run 3 or more seeds" in done.stdout
    assert said in (out / "comparison" / "compare.md").read_text()
    assert said in (out / "comparison" / "report.html").read_text()
    # a hand-picked set of runs where one pipeline is alone: nothing to rank, no such note
    assert main([str(out / "0"), "--out", str(tmp_path / "one")]) == 0
    assert "No ranking" not in capsys.readouterr().out


def test_the_triggers_axis_reads_in_plain_numbers(monkeypatch, tmp_path):
    """Between 4 and 13 triggers (less than a decade on the log axis) the ticks read 4, 6, 10, not
    4×10⁰ and 6×10⁰."""
    from ctsim.reports import plots

    drawn = []

    def keep(fig, path):
        fig.canvas.draw()
        drawn.append([t.get_text() for t in fig.axes[0].get_xticklabels(minor=True)])
        drawn[-1] += [t.get_text() for t in fig.axes[0].get_xticklabels()]
        return path

    monkeypatch.setattr(plots, "_save", keep)
    table = pl.DataFrame(
        {
            "pipeline": ["a", "b"],
            "triggers": [4.0, 13.0],
            "accuracy": [0.7, 0.8],
            "ci_low": [0.6, 0.7],
            "ci_high": [0.8, 0.9],
        }
    )
    plots.accuracy_triggers(table, None, tmp_path / "t.png")
    labels = [t for t in drawn[0] if t]
    assert labels and "4" in labels and "10" in labels
    assert not any("times" in t or "^" in t or "×" in t for t in labels), labels


def test_the_runs_list_gives_each_jobs_seeds_in_job_order(user):
    """A 1 × 11 sweep over seeds: compare.md and report.html list job 2 before job 10, each with the seed
    it ran (the overrides that name a pipeline leave seeds out, so without it the jobs read alike)."""
    seeds = ",".join(f"[{s}]" for s in range(11))
    out, done = sweep(user, "seeds", "trigger=time", f"population.seeds={seeds}")
    assert done.returncode == 0, done.stderr
    md = (out / "comparison" / "compare.md").read_text().split("## Runs")[1]
    assert md.index(f"`{out / '2'}`") < md.index(f"`{out / '10'}`")
    assert f"`{out / '10'}`: " in md and "· seed(s) 10\n" in md
    html = (out / "comparison" / "report.html").read_text()
    assert html.index(f"<code>{out / '2'}</code>") < html.index(f"<code>{out / '10'}</code>")


def test_compare_takes_a_quoted_glob_of_run_folders(window_sweep, tmp_path, capsys):
    out, _ = window_sweep
    assert main([str(out / "[02]"), "--out", str(tmp_path / "picked")]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    assert main([str(out / "[89]"), "--out", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_pipeline_whose_models_did_not_learn_is_called_near_chance(user):
    """lr 1e-9 leaves every model as initialised: its AUROC sits near 0.5 and the comparison says so, in
    the console, compare.md and report.html; the pipeline that learned (lr 0.05) is not named."""
    out, done = sweep(user, "chance", "optimizer.lr=1e-9,0.05")
    assert done.returncode == 0, done.stderr
    table = pl.read_parquet(out / "comparison" / "compare.parquet").sort("pipeline")
    auroc = dict(zip(table["pipeline"], table["auroc"]))
    assert auroc["optimizer.lr=1e-09"] <= 0.6 < auroc["optimizer.lr=0.05"]
    line = next(x for x in done.stdout.splitlines() if "Near chance:" in x)
    assert "optimizer.lr=1e-09 (AUROC" in line and "optimizer.lr=0.05" not in line
    for page in ("compare.md", "report.html"):
        assert "Near chance: optimizer.lr=1e-09" in (out / "comparison" / page).read_text()
