"""The Hydra callback that compares a sweep's runs when the sweep ends (``conf/config.yaml``:
``hydra.callbacks.compare``).

At the end of every multirun, whatever launcher ran the jobs (Hydra's basic one, joblib, submitit), it
writes ``<sweep dir>/comparison/`` (:mod:`ctsim.reports.compare`). When a job fails, Hydra stops the
sweep with an error after the other jobs have run and never calls ``on_multirun_end``; the command
line then calls :func:`after_failure`, which writes the comparison of the jobs that finished and
names the failed ones with their errors. A job that gives no result without an exception (a value its
data cannot serve, or no model trained) lets the sweep go on; once every job ran, the command line
names them (:func:`failed_jobs`) and exits with code 1. ``hydra.callbacks.compare.enabled=false``
turns the comparison off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ctsim.reports.comparison import PRICE_PER_HOUR

_sweeps: list[CompareSweep] = []  # the callbacks of this process's multirun (one, in practice)


class CompareSweep(Callback):
    def __init__(self, enabled: bool = True, price_per_hour: float = PRICE_PER_HOUR) -> None:
        self.enabled = bool(enabled)
        self.price_per_hour = float(price_per_hour)
        self.sweep_dir: Path | None = None
        self.written = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        _sweeps.append(self)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.write()

    def write(self) -> None:
        """Compare the sweep's runs into ``<sweep dir>/comparison``; a problem is printed, not raised (the
        runs are written already, and ``ctsim compare`` can be run on them later)."""
        if not self.enabled or self.written or self.sweep_dir is None:
            return
        self.written = True
        from ctsim.reports.compare import CompareError, compare, console

        try:
            out, comparison, table = compare(
                [self.sweep_dir], self.sweep_dir / "comparison", price_per_hour=self.price_per_hour
            )
        except (CompareError, FileNotFoundError) as e:
            print(f"ctsim: no comparison of the sweep {self.sweep_dir}: {e}", file=sys.stderr)
            return
        print(console(comparison, table, out), flush=True)


def after_failure() -> None:
    """A sweep stopped with an error: compare what it wrote (see the module docstring)."""
    for sweep in _sweeps:
        sweep.write()


def failed_jobs() -> list[tuple[Path, str]]:
    """The jobs of this process's sweep that gave no result, each with why
    (:func:`ctsim.reports.compare.failed_jobs`)."""
    from ctsim.reports.compare import failed_jobs

    return [job for sweep in _sweeps if sweep.sweep_dir is not None for job in failed_jobs(sweep.sweep_dir)]
