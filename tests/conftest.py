"""Shared helpers: compose the real Hydra config (conf/) and build or run it, as the CLI does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode

from ctsim.app.build import RunPlan, build_run
from ctsim.app.cli import CONF_DIR
from ctsim.app.execute import RunOutcome, execute

REPO = CONF_DIR.parent

# pytest-xdist runs a worker per core (pyproject's addopts): each worker, and the runs it starts in
# subprocesses, take their share of the cores. Two workers with torch's default of every core each would
# make its threads wait on each other; the tests that check thread counts read them from torch or strip
# OMP_NUM_THREADS themselves.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    import torch

    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def small(tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a quick run: its own data root, no progress bars, no plots unless asked."""
    return [f"dataset.root={tmp_path / 'datasets'}", "progress=false", "output.plots=false", *extra]


def build(overrides: list[str]) -> RunPlan:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        return build_run(compose("config", overrides=overrides), overrides)


def run(overrides: list[str], out_dir: Path) -> RunOutcome:
    return execute(build(overrides), out_dir, echo=False)


def own_experiment(root: Path, name: str, text: str) -> Path:
    """``root`` as a user's folder holding their own experiment ``configs/experiment/<name>.yaml``
    (``--config-dir configs``, or ``hydra.searchpath=[file://<root>/configs]``)."""
    (root / "configs" / "experiment").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "experiment" / f"{name}.yaml").write_text(text)
    return root


def cli(
    args: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ctsim ARGS`` in a subprocess, as a user types it (``env``: more variables)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ctsim", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_portraits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root shared by tests that use the same small portraits (generated once)."""
    return tmp_path_factory.mktemp("datasets")


class OpLog(TorchDispatchMode):
    """Records every aten op dispatched while active (each is at least one kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def write_finished_run(
    folder: Path, evals: list[dict], gens: list[dict], cost: list[dict], config: dict, overrides=()
) -> None:
    """A finished run folder made with the registry's own writers from rows of ``evals``, ``generations``
    and ``cost`` (the other tables empty), as the comparison, significance and oracle tests read it."""
    import polars as pl

    from ctsim.measure.metrics import METRICS_SCHEMA
    from ctsim.measure.quality import QUALITY_SCHEMA
    from ctsim.registry.layout import (
        COST_SCHEMA,
        EVALS_SCHEMA,
        GENERATIONS_SCHEMA,
        LINEAGE_SCHEMA,
        SKIPPED_SCHEMA,
        TABLE_VERSION,
    )
    from ctsim.registry.store import write_status, write_tables

    tables = {
        "evals": pl.DataFrame(evals, schema=EVALS_SCHEMA),
        "generations": pl.DataFrame(gens, schema=GENERATIONS_SCHEMA),
        "cost": pl.DataFrame(cost, schema=COST_SCHEMA),
        "lineage": pl.DataFrame(schema=LINEAGE_SCHEMA),
        "quality": pl.DataFrame(schema=QUALITY_SCHEMA),
        "skipped": pl.DataFrame(schema=SKIPPED_SCHEMA),
        "metrics": pl.DataFrame(schema=METRICS_SCHEMA),
    }
    folder.mkdir(parents=True)
    write_tables(tables, folder)
    write_status(
        folder, "finished", tables=TABLE_VERSION, overrides=list(overrides), config=config, data_hash="same"
    )
