"""Sweeps and their comparison, as a user runs them: ``python -m ctsim -m ...`` writes
``<sweep>/comparison/`` through the Hydra callback, and ``ctsim compare`` writes the same for
any set of runs. The numbers are checked against the runs' own tables, recomputed here."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats

from ctsim.reports.compare import SUMMARY_SCHEMA, gather, main
from ctsim.reports.plots import pareto_front

from .conftest import REPO, cli, own_experiment, run

# SEA (40 slices of 500 samples at full size) and an MLP: a run takes well under a second.
EXPERIMENT = """\
# @package _global_
defaults:
  - override /dataset: sea
  - override /model: mlp
name: tiny
dataset:
  size: 0.1
train:
  epochs: 1
progress: false
output:
  plots: false
  checkpoints: none
"""
SEEDS = (0, 1, 2)
TRIGGERS = ("trigger=time", "trigger=amount")

# A model that fails in training (after the start-up checks) when fail=true: a job that fails
# (tests/test_sweeps.py).
BOOM = """\
import math

import torch
from torch import nn

calls = 0


class Boom(nn.Module):
    def __init__(self, input_shape, num_classes, fail=False):
        super().__init__()
        self.fail = fail
        self.head = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x):
        global calls
        if self.fail:
            calls += 1
            if calls > 50:
                raise RuntimeError("boom: this model fails on purpose")
        return self.head(x.flatten(1))
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    return own_experiment(tmp_path_factory.mktemp("sweeper"), "tiny", EXPERIMENT)


def sweep(user: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    args = ("--config-dir", "configs", "-m", "experiment=tiny", f"dataset.root={user / 'data'}", *args)
    return cli([*args, f"hydra.sweep.dir={out}"], cwd=user)


@pytest.fixture(scope="module")
def swept(user) -> Path:
    """2 triggers × 3 seeds through Hydra's basic launcher: six runs in one sweep folder."""
    out = user / "sweeps" / "basic"
    seeds = ",".join(f"[{s}]" for s in SEEDS)
    triggers = "trigger=" + ",".join(t.split("=")[1] for t in TRIGGERS)  # trigger=time,amount
    done = sweep(user, out, triggers, f"population.seeds={seeds}")
    assert done.returncode == 0, done.stderr
    return out


def test_the_comparison_callback_can_be_turned_off(swept, tmp_path):
    """``hydra.callbacks.compare.enabled=false``: the callback Hydra builds from it writes nothing."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(REPO / "conf" / "config.yaml").hydra.callbacks.compare
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(swept / "0", sweep_dir / "0")
    hydra_cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    for enabled in (False, True):
        callback = instantiate(config, enabled=enabled)
        callback.on_multirun_start(hydra_cfg)
        callback.on_multirun_end(hydra_cfg)
        assert (sweep_dir / "comparison" / "report.html").exists() == enabled


def cost_of(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "cost.parquet")


def test_a_sweep_ends_with_its_comparison_recomputed_from_the_runs(swept):
    table = pl.read_parquet(swept / "comparison" / "compare.parquet")
    assert table.schema == pl.Schema(SUMMARY_SCHEMA)
    assert sorted(table["pipeline"]) == sorted(TRIGGERS)  # told apart by the override the runs do not share
    for trigger in TRIGGERS:
        runs = [d for d in swept.iterdir() if d.name.isdigit() and trigger in _overrides(d)]
        costs = pl.concat([cost_of(d) for d in runs])
        assert sorted(costs["seed"]) == list(SEEDS)
        row = table.filter(pl.col("pipeline") == trigger).row(0, named=True)
        acc = costs["composite_accuracy"].to_list()
        mean, sd = sum(acc) / 3, math.sqrt(sum((a - sum(acc) / 3) ** 2 for a in acc) / 2)
        half = stats.t.ppf(0.975, df=2) * sd / math.sqrt(3)  # the 95% t interval, by hand
        assert row["seeds"] == 3
        assert row["accuracy"] == pytest.approx(mean, abs=1e-12)
        assert row["ci_low"] == pytest.approx(mean - half, abs=1e-12)
        assert row["ci_high"] == pytest.approx(mean + half, abs=1e-12)
        assert row["triggers"] == pytest.approx(costs["triggers"].mean())
        device_s = (costs["trigger_s"] + costs["selection_s"] + costs["train_s"]).mean()
        assert row["device_s"] == pytest.approx(device_s)
        assert row["cost_usd"] == pytest.approx(device_s / 3600 * 2.0)  # conf: price_per_hour 2.0
        tflops = (costs["train_flops"] + costs["selection_flops"]).mean() / 1e12
        assert row["tflops"] == pytest.approx(tflops)
        assert row["auroc"] is not None and 0 <= row["auroc"] <= 1
    # trigger=time fires at every slice: it is the oracle's candidate source, and no schedule it
    # offers beats all of its own generations by less than nothing
    time_row = table.filter(pl.col("pipeline") == "trigger=time").row(0, named=True)
    assert time_row["regret"] is not None and time_row["regret"] >= -1e-12
    for name in ("accuracy_triggers", "pareto", "composite", "matrices"):
        assert (swept / "comparison" / "plots" / f"{name}.png").stat().st_size > 1000
    page = (swept / "comparison" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.split("<body>")[1])
    assert "http" not in text  # nothing fetched (the images' base64 may spell anything)


def _overrides(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "status.json").read_text())["overrides"]


def test_compare_command_writes_the_same_table_and_never_overwrites(swept, tmp_path, capsys):
    out = tmp_path / "again"
    assert main([str(swept), "--out", str(out), "--price-per-hour", "3.5"]) == 0
    mine = pl.read_parquet(out / "compare.parquet")
    theirs = pl.read_parquet(swept / "comparison" / "compare.parquet")
    assert_frame_equal(mine.drop("cost_usd"), theirs.drop("cost_usd"))
    assert mine["cost_usd"].to_list() == pytest.approx([d / 3600 * 3.5 for d in mine["device_s"]])
    before = (out / "report.html").read_bytes()
    capsys.readouterr()
    assert main([str(swept), "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (out / "report.html").read_bytes() == before


def test_compare_refuses_what_cannot_be_compared(swept, user, tmp_path, capsys):
    def refused(*paths: Path, extra: tuple = ()) -> str:
        capsys.readouterr()
        assert main([*map(str, paths), "--out", str(tmp_path / "never"), *extra]) == 2
        assert not (tmp_path / "never").exists()
        return capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no ctsim runs" in refused(empty)
    capsys.readouterr()
    assert main([str(swept / "0"), str(swept / "1")]) == 2  # two folders: where would it go?
    assert "--out DIR" in capsys.readouterr().err
    assert not (swept / "0" / "comparison").exists()
    assert "--price-per-hour" in refused(swept, extra=("--price-per-hour", "-1"))

    # a run of other data (a fifth of SEA instead of a tenth)
    other = user / "runs" / "other"
    search = f"hydra.searchpath=[file://{user / 'configs'}]"
    run(["experiment=tiny", f"dataset.root={user / 'data'}", "dataset.size=0.2", search], other)
    err = refused(swept, other)
    assert "different data" in err and "size 0.2" in err and str(other) in err

    # a run written by an older ctsim (its status.json has no table version)
    old = tmp_path / "old"
    shutil.copytree(swept / "0", old / "0")
    status = json.loads((old / "0" / "status.json").read_text())
    del status["tables"]
    (old / "0" / "status.json").write_text(json.dumps(status))
    err = refused(old)
    assert "older ctsim" in err and "version 1" in err

    # the same pipeline and seed twice
    twice = tmp_path / "twice"
    shutil.copytree(swept / "0", twice / "a")
    shutil.copytree(swept / "0", twice / "b")
    assert "the same pipeline and seed in more than one run" in refused(twice)


def test_a_job_that_wrote_no_run_is_named_with_its_overrides(swept, tmp_path):
    """A sweep job that stopped before its run began (Hydra's .hydra folder, no status.json)."""
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(swept / "0", sweep_dir / "0")
    (sweep_dir / "1" / ".hydra").mkdir(parents=True)
    (sweep_dir / "1" / ".hydra" / "overrides.yaml").write_text("- trigger=amount\n- optimizer.lr=0.5\n")
    comparison = gather([sweep_dir])
    assert [r.path for r in comparison.runs] == [sweep_dir / "0"]
    assert comparison.left_out == [
        (
            str(sweep_dir / "1"),
            f"no run was written (trigger=amount optimizer.lr=0.5); see {sweep_dir / '1'}/ctsim.log",
        )
    ]


def test_pareto_front_keeps_exactly_the_undominated_points():
    cost = [1.0, 2.0, 2.0, 3.0, 0.5, 4.0]
    acc = [0.5, 0.7, 0.6, 0.7, 0.4, 0.9]
    front = pareto_front(cost, acc)
    assert front == [4, 0, 1, 5]
    for i in range(len(cost)):  # i is on the front iff no other point is as cheap and more accurate
        dominated = any(
            (cost[j] <= cost[i] and acc[j] >= acc[i]) and (cost[j] < cost[i] or acc[j] > acc[i])
            for j in range(len(cost))
        )
        assert (i in front) == (not dominated)
