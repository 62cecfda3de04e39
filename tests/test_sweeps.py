"""Sweeps through the launchers of the ``sweep`` extra: joblib (local processes) and submitit
(``submitit_local`` here, ``submitit_slurm`` on a cluster). Each 2-job sweep must run its jobs outside
the process that started it, and end with the comparison of both runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import polars as pl
import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from ctsim.app.cli import gpu_of_job, job_threads

from .conftest import own_experiment
from .test_compare import BOOM, EXPERIMENT


def installed(plugin: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    return own_experiment(tmp_path_factory.mktemp("launchers"), "tiny", EXPERIMENT)


def pids(out: Path) -> set[int]:
    return {json.loads((out / job / "status.json").read_text())["pid"] for job in ("0", "1")}


def compared(out: Path) -> list[str]:
    assert (out / "comparison" / "report.html").exists()
    return sorted(pl.read_parquet(out / "comparison" / "compare.parquet")["pipeline"])


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


def default_folder_sweep(
    user: Path, name: str, *args: str, env: dict | None = None
) -> tuple[Path, Path, CompletedProcess]:
    """A 2-job sweep as a user types it, without ``hydra.sweep.dir``, in a folder of its own, with no
    thread setting in the environment (so ctsim chooses the jobs' threads). Returns the folder it ran
    in, the one sweep folder it wrote, and the finished process."""
    cwd = user / name
    (cwd / "configs").mkdir(parents=True)
    (cwd / "configs" / "experiment").symlink_to(user / "configs" / "experiment")
    config = ["--config-dir", "configs", "-m", "experiment=tiny", f"dataset.root={user / 'data'}"]
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CTSIM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-m", "ctsim", *config, *args],
        cwd=cwd,
        env={**environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    sweeps = list((cwd / "results" / "multiruns" / "tiny").iterdir())
    assert len(sweeps) == 1, (sweeps, done.stderr)  # one sweep folder, not one per job
    assert {"0", "1", "comparison", "multirun.yaml"} <= {p.name for p in sweeps[0].iterdir()}, done.stderr
    cores = len(os.sched_getaffinity(0))
    threads = {json.loads((sweeps[0] / job / "status.json").read_text())["cpu_threads"] for job in ("0", "1")}
    assert threads == {max(1, cores // 2)}  # two jobs side by side share the cores
    return cwd, sweeps[0], done


# Each launcher runs one sweep (CI's time is short): in the default folder, as a user types it. Once each
# worker process claimed a sweep folder of its own (``<stamp>_2/0``, ``<stamp>_3/1``) and the sweep's own
# folder held only multirun.yaml: no comparison.


@pytest.mark.skipif(not installed("hydra_joblib_launcher"), reason='needs pip install -e ".[sweep]"')
def test_a_joblib_sweep_runs_jobs_in_two_processes_and_compares_them_when_one_fails(user):
    """Job 1's model fails in training: the sweep exits with Hydra's error, after comparing job 0 and
    naming job 1 with its error."""
    (user / "code").mkdir()
    (user / "code" / "boom.py").write_text(BOOM)
    model = ["model._target_=boom.Boom", "~model.hidden", "+model.fail=false,true"]
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    env = {"PYTHONPATH": str(user / "code")}
    cwd, out, done = default_folder_sweep(user, "joblib", *model, *launcher, env=env)
    failed = out.relative_to(cwd) / "1"  # a sweep in the default folder is named relative to where it ran
    assert done.returncode != 0
    assert "boom: this model fails on purpose" in done.stderr
    assert len(pids(out)) == 2 and os.getpid() not in pids(out)  # two worker processes
    assert [p.lower() for p in compared(out)] == ["+model.fail=false"]
    md = (out / "comparison" / "compare.md").read_text()
    assert "## Left out" in md and f"`{failed}`: failed: RuntimeError: boom" in md
    assert f"left out {failed}: failed: RuntimeError: boom" in done.stdout


@pytest.mark.skipif(not installed("hydra_submitit_launcher"), reason='needs pip install -e ".[sweep]"')
def test_a_submitit_local_sweep_runs_its_jobs_as_submitit_jobs_and_compares_them(user):
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    _, out, done = default_folder_sweep(user, "submitit", "trigger=time,amount", *launcher)
    assert done.returncode == 0, done.stderr
    assert (out / ".submitit").is_dir()  # submitit's own job folders: the jobs went through it
    assert os.getpid() not in pids(out)
    assert compared(out) == ["trigger=amount", "trigger=time"]
    assert "no comparison" not in done.stderr


def test_jobs_side_by_side_get_a_share_of_the_cores():
    joblib = OmegaConf.create({"hydra": {"launcher": {"_target_": "h.JoblibLauncher", "n_jobs": 4}}})
    local = OmegaConf.create({"hydra": {"launcher": {"_target_": "h.LocalLauncher", "array_parallelism": 9}}})
    basic = OmegaConf.create({"hydra": {"launcher": {"_target_": "h.BasicLauncher"}}})
    assert job_threads(joblib, jobs=8, cores=16, environ={}) == 4
    assert job_threads(joblib, jobs=2, cores=16, environ={}) == 8  # only 2 jobs: 2 at once
    assert job_threads(local, jobs=3, cores=16, environ={}) == 5
    assert job_threads(basic, jobs=8, cores=16, environ={}) is None  # one after another: every core
    assert job_threads(joblib, jobs=8, cores=16, environ={"OMP_NUM_THREADS": "2"}) is None  # the user's
    minus_one = OmegaConf.create({"hydra": {"launcher": {"_target_": "h.JoblibLauncher", "n_jobs": -1}}})
    assert job_threads(minus_one, jobs=32, cores=16, environ={}) == 1
