"""What the case-study scripts share: run one experiment into a fresh run folder, and a report's heading.

Imported by ``experiments/portraits_*.py``, which run as scripts (``python experiments/<name>.py``), so
this folder is on ``sys.path``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ctsim.cli import unique_dir

REPO = Path(__file__).resolve().parent.parent


def run_experiment(experiment: str, overrides: list[str], tag: str) -> tuple[Path, float]:
    """``python -m ctsim experiment=EXPERIMENT OVERRIDES`` into ``results/runs/EXPERIMENT/<stamp>_<tag>``;
    the run folder and the wall time in seconds."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path(unique_dir(str(REPO / "results" / "runs" / experiment / f"{stamp}_{tag}")))
    command = [sys.executable, "-m", "ctsim", f"experiment={experiment}", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run([*command, "progress=false", *overrides], cwd=REPO, check=True)
    return run_dir, time.perf_counter() - start


def heading(title: str, command: str, run_dir: Path, wall: float | None) -> list[str]:
    """A report's first lines: the title, the command, the run folder (relative to the repository where
    it lies inside it) and the wall time."""
    shown_dir = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
    wall_time = f" · wall time {wall:.0f} s" if wall is not None else ""
    return [f"# {title}", "", f"`{command}` · run folder `{shown_dir}`{wall_time}", ""]
