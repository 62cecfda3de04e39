"""What the case-study scripts share: run one experiment into a fresh run folder, and a report's heading.

Imported by ``experiments/portraits_*.py``, which run as scripts (``python experiments/<name>.py``), so
this folder is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ctsim.app.cli import unique_dir

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


def size_flags(parser: argparse.ArgumentParser, reduced: str) -> None:
    """``--full`` (the study at full size, meant for a GPU); without it the reduced form (``reduced``
    says what that is), which takes minutes on 2 CPU cores."""
    parser.add_argument("--full", action="store_true", help=f"full size (default: reduced: {reduced})")


def write_comparison(run_dir: Path, study: str, reduced: bool, command: str) -> Path:
    """``python -m ctsim compare RUN_DIR`` into ``results/reference/<study>/comparison[_reduced]/`` (the
    reference replaces the one before it), with the command that made the run in a README."""
    from ctsim.reports.compare import compare, console

    out = REPO / "results" / "reference" / study / ("comparison_reduced" if reduced else "comparison")
    if out.exists():
        shutil.rmtree(out)
    shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir
    # the report lists its runs as given: relative to the repository, not this machine's absolute path
    _, comparison, table = compare([shown if Path.cwd().resolve() == REPO else run_dir], out)
    (out / "README.md").write_text(
        f"# {study}{' (reduced)' if reduced else ''}: comparison\n\n"
        f"Made by `{command}` (run folder `{shown}`, not committed), then "
        f"`python -m ctsim compare {shown} --out {out.relative_to(REPO)}`. "
        "See compare.md for the table and report.html for all of it.\n"
    )
    print(console(comparison, table, out))
    return out
