"""Sweeps through the launchers of the ``sweep`` extra: joblib (local processes) and submitit
(``submitit_local`` here, ``submitit_slurm`` on a cluster). Each 2-job sweep must run its jobs outside
the process that started it, and end with the comparison of both runs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from subprocess import CompletedProcess

import polars as pl
import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from ctsim.cli import gpu_of_job

from .conftest import cli, own_experiment
from .test_compare import BOOM, EXPERIMENT


def installed(plugin: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    return own_experiment(tmp_path_factory.mktemp("launchers"), "tiny", EXPERIMENT)


def two_jobs(user: Path, name: str, *launcher: str, env: dict | None = None) -> tuple[Path, CompletedProcess]:
    out = user / name
    args = ["--config-dir", "configs", "-m", "experiment=tiny", f"dataset.root={user / 'data'}"]
    return out, cli([*args, *launcher, f"hydra.sweep.dir={out}"], cwd=user, env=env)


def pids(out: Path) -> set[int]:
    return {json.loads((out / job / "status.json").read_text())["pid"] for job in ("0", "1")}


def compared(out: Path) -> list[str]:
    assert (out / "comparison" / "report.html").exists()
    return sorted(pl.read_parquet(out / "comparison" / "compare.parquet")["pipeline"])


@pytest.mark.skipif(not installed("hydra_joblib_launcher"), reason='needs pip install -e ".[sweep]"')
def test_a_joblib_sweep_runs_jobs_in_two_processes_and_compares_them_when_one_fails(user):
    """Job 1's model fails in training: the sweep exits with Hydra's error, after comparing job 0 and
    naming job 1 with its error."""
    (user / "code").mkdir()
    (user / "code" / "boom.py").write_text(BOOM)
    model = ["model._target_=boom.Boom", "~model.hidden", "+model.fail=false,true"]
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    out, done = two_jobs(user, "joblib", *model, *launcher, env={"PYTHONPATH": str(user / "code")})
    assert done.returncode != 0
    assert "boom: this model fails on purpose" in done.stderr
    assert len(pids(out)) == 2 and os.getpid() not in pids(out)  # two worker processes
    assert [p.lower() for p in compared(out)] == ["+model.fail=false"]
    md = (out / "comparison" / "compare.md").read_text()
    assert "## Left out" in md and f"{out / '1'}" in md and "RuntimeError: boom" in md
    assert f"left out {out / '1'}: failed: RuntimeError: boom" in done.stdout


@pytest.mark.skipif(not installed("hydra_submitit_launcher"), reason='needs pip install -e ".[sweep]"')
def test_a_submitit_local_sweep_runs_its_jobs_as_submitit_jobs_and_compares_them(user):
    out, done = two_jobs(
        user,
        "submitit",
        "trigger=time,amount",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert done.returncode == 0, done.stderr
    assert (out / ".submitit").is_dir()  # submitit's own job folders: the jobs went through it
    assert os.getpid() not in pids(out)
    assert compared(out) == ["trigger=amount", "trigger=time"]


def test_jobs_side_by_side_take_different_gpus(monkeypatch, tmp_path):
    """``gpu_of_job`` on a (pretended) machine with two GPUs: two jobs at once take GPU 0 and 1; a
    third waits for none while one is free again; a single run or one GPU changes nothing."""
    import torch

    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)

    def job(num: int, mode: str = "MULTIRUN"):
        cfg = OmegaConf.create({"mode": RunMode[mode], "sweep": {"dir": str(tmp_path)}, "job": {"num": num}})
        return gpu_of_job(cfg)

    with job(0) as first, job(1) as second:
        assert (first, second) == (0, 1)
    with job(2) as third:  # both released: the first free one
        assert third == 0
    with job(3, mode="RUN") as single:
        assert single is None
    assert current == [0, 1, 0]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with job(4) as alone:
        assert alone is None
