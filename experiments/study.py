"""What the case-study scripts share: run one experiment into a fresh run folder, and a report's heading.

Imported by ``experiments/portraits_*.py``, which run as scripts (``python experiments/<name>.py``), so
this folder is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ctsim.app.cli import unique_dir

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timing:
    """A run's wall time and the CPU time (user + system) of the process that ran it, in seconds.

    On a shared machine the wall time swings with the load, the CPU time much less, so reports give both.
    ``cpu`` is None where only a wall time was given (``--run-dir DIR --wall S``).
    """

    wall: float
    cpu: float | None = None

    def __str__(self) -> str:
        if self.cpu is None:
            return f"wall time {self.wall:.0f} s"
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        return f"wall time {self.wall:.0f} s, CPU time {self.cpu:.0f} s (OMP_NUM_THREADS={threads})"


def run_experiment(
    experiment: str, overrides: list[str], tag: str, run_dir: Path | None = None
) -> tuple[Path, Timing]:
    """``python -m ctsim experiment=EXPERIMENT OVERRIDES`` into ``run_dir`` (default
    ``results/runs/EXPERIMENT/<stamp>_<tag>``); the run folder and its :class:`Timing`.

    A run stopped before it ends continues with ``python -m ctsim resume RUN_DIR``; the study's script
    then reports on it with ``--run-dir RUN_DIR``.
    """
    if run_dir is None:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = Path(unique_dir(str(REPO / "results" / "runs" / experiment / f"{stamp}_{tag}")))
    elif run_dir.exists():
        raise SystemExit(
            f"--into {run_dir}: the folder exists; give a new one (or resume it with "
            f"python -m ctsim resume {run_dir})"
        )
    run_dir = run_dir.resolve()
    command = [sys.executable, "-m", "ctsim", f"experiment={experiment}", f"hydra.run.dir={run_dir}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*command, "progress=false", *overrides], cwd=REPO, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return run_dir, Timing(wall, cpu)


def heading(title: str, command: str, run_dirs: Path | list[Path], timing: Timing | None) -> list[str]:
    """A report's first lines: the title, the command, the run folder(s) (relative to the repository
    where they lie inside it), the wall and CPU time, and the commit measured."""
    dirs = [run_dirs] if isinstance(run_dirs, Path) else run_dirs
    shown = " ".join(f"`{d.relative_to(REPO) if d.is_relative_to(REPO) else d}`" for d in dirs)
    times = f" · {timing}" if timing is not None else ""
    return [f"# {title}", "", f"`{command}` · run folder(s) {shown}{times} · commit {commit()}", ""]


def commit() -> str:
    """The repository's HEAD commit (short), with ``+changes`` when the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def size_flags(parser: argparse.ArgumentParser, quick: str) -> None:
    """``--full`` (the study at full size: Modyn's setup); without it the quick form (``quick`` says what
    that is, its experiment file ``conf/experiment/<study>_quick.yaml`` says what each change costs)."""
    parser.add_argument("--full", action="store_true", help=f"full size (default: the quick form: {quick})")
    parser.add_argument(
        "--into", type=Path, help="a new run folder to run in (default: results/runs/<experiment>/<stamp>)"
    )


def experiment_name(study: str, full: bool) -> str:
    """The experiment a study's script runs: ``<study>`` at full size, else ``<study>_quick``."""
    return study if full else f"{study}_quick"


def write_comparison(
    run_dirs: Path | list[Path], study: str, quick: bool, command: str, candidates: str | None = None
) -> Path:
    """``ctsim compare RUN_DIR... [--candidates NAME]`` into
    ``results/reference/<study>/comparison[_quick]/`` (the reference replaces the one before it), with the
    command that made the run(s) in a README."""
    from ctsim.reports.compare import compare, console

    out = REPO / "results" / "reference" / study / ("comparison_quick" if quick else "comparison")
    if out.exists():
        shutil.rmtree(out)
    dirs = [run_dirs] if isinstance(run_dirs, Path) else run_dirs
    inside = Path.cwd().resolve() == REPO
    # the report lists its runs as given: relative to the repository, not this machine's absolute path
    shown = [d.relative_to(REPO) if inside and d.resolve().is_relative_to(REPO) else d for d in dirs]
    _, comparison, table = compare(shown, out, candidates=candidates)
    flag = f" --candidates {candidates}" if candidates else ""
    listed = " ".join(str(d) for d in shown)
    (out / "README.md").write_text(
        f"# {study}{' (quick form)' if quick else ''}: comparison\n\n"
        f"Made by `{command}` (run folder(s) `{listed}`, not committed), then "
        f"`ctsim compare {listed}{flag} --out {out.relative_to(REPO)}`. "
        "See compare.md for the table and report.html for all of it.\n"
    )
    print(console(comparison, table, out))
    return out
