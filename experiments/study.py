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
    processes: int = 1  # run side by side, one thread each unless OMP_NUM_THREADS was set

    def __str__(self) -> str:
        if self.cpu is None:
            return f"wall time {self.wall:.0f} s"
        threads = os.environ.get("OMP_NUM_THREADS", "unset" if self.processes == 1 else "1")
        where = f"{self.processes} processes side by side, " if self.processes > 1 else ""
        return f"wall time {self.wall:.0f} s, CPU time {self.cpu:.0f} s ({where}OMP_NUM_THREADS={threads})"


def run_experiment(
    experiment: str, overrides: list[str], tag: str, run_dir: Path | None = None
) -> tuple[Path, Timing]:
    """``python -m ctsim experiment=EXPERIMENT OVERRIDES`` into ``run_dir`` (default
    ``results/runs/EXPERIMENT/<stamp>_<tag>``); the run folder and its :class:`Timing`.

    A run stopped before it ends continues with ``python -m ctsim resume RUN_DIR``; the study's script
    then reports on it with ``--run-dir RUN_DIR``.
    """
    run_dir = _fresh(experiment, tag, run_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(_command(experiment, run_dir, overrides), cwd=REPO, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return run_dir, Timing(wall, cpu)


def default_jobs(full: bool) -> int:
    """Processes a study's script runs side by side by default: one per usable core for a quick form on
    a CPU machine (its small models gain nothing from a second torch thread: the quick selection study's
    run took 303 s with 2 threads and 299 s with one, on a quiet 2-core machine), else one."""
    import torch

    return 1 if full or torch.cuda.is_available() else len(os.sched_getaffinity(0))


def quick_knobs(study: str) -> str:
    """What ``<study>_quick`` changes from ``<study>``, read from the two composed configs (not restated by
    hand): every setting that differs as ``key=value``, then the variants whose overrides differ and
    those the quick form leaves out."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ctsim.app.compose import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="study"):
        full, quick = (compose("config", overrides=[f"experiment={e}"]) for e in (study, f"{study}_quick"))
    leaves = [_leaves(OmegaConf.to_container(c, resolve=True, throw_on_missing=False)) for c in (full, quick)]
    variants = [dict(OmegaConf.select(c, "population.variants") or {}) for c in (full, quick)]
    only = OmegaConf.select(quick, "population.only")
    skip = ("name", "population.variants.", "population.only")
    knobs = [
        f"{key}={_shown(leaves[1].get(key))}"
        for key in dict.fromkeys([*leaves[0], *leaves[1]])
        if not key.startswith(skip) and leaves[0].get(key) != leaves[1].get(key)
    ]
    changed = [v for v in variants[0] if v in variants[1] and list(variants[0][v]) != list(variants[1][v])]
    left_out = [v for v in variants[0] if v not in variants[1] or (only is not None and v not in only)]
    if changed:
        knobs.append(f"variants changed: {', '.join(changed)}")
    if left_out:
        knobs.append(f"without {', '.join(left_out)}")
    return ", ".join(knobs)


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: object) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


def variant_groups(experiment: str, overrides: list[str], jobs: int) -> list[list[str]]:
    """The experiment's variants (those ``population.only`` keeps), dealt into at most ``jobs`` groups
    back and forth (1, 2, 2, 1, 1, 2, …: neighbours in a study's list are often alike in cost, as a
    selection policy's two forms are, so each group gets one of each pair); one empty group where the
    config cannot be composed (the run then names the bad override) or there is nothing to split."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from ctsim.app.compose import CONF_DIR

    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="study"):
            cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    except (HydraException, ValueError):
        return [[]]
    variants = list(OmegaConf.select(cfg, "population.variants") or {})
    only = OmegaConf.select(cfg, "population.only")
    names = [v for v in variants if only is None or v in only]
    jobs = max(1, min(jobs, len(names)))
    if jobs == 1:
        return [[]]
    groups: list[list[str]] = [[] for _ in range(jobs)]
    for i, name in enumerate(names):
        turn, k = divmod(i, jobs)
        groups[k if turn % 2 == 0 else jobs - 1 - k].append(name)
    return groups


def run_study(
    experiment: str, overrides: list[str], tag: str, run_dir: Path | None = None, jobs: int = 1
) -> tuple[list[Path], Timing]:
    """:func:`run_experiment`, or with ``jobs`` > 1 the experiment's variants split into that many runs
    side by side (``population.only``), one torch thread each unless ``OMP_NUM_THREADS`` is set, in
    ``RUN_DIR/part<i>``; the run folders (read together by the reports) and the :class:`Timing` of all.

    A part that fails stops the others; each part is its own run folder, so a stopped part continues
    with ``python -m ctsim resume RUN_DIR/part<i>``.
    """
    groups = variant_groups(experiment, overrides, jobs)
    if len(groups) == 1:
        one, timing = run_experiment(experiment, overrides, tag, run_dir)
        return [one], timing
    run_dir = _fresh(experiment, tag, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # a folder of our own: claimed empty, or new
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    parts, procs = [run_dir / f"part{i}" for i in range(1, len(groups) + 1)], []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for part, group in zip(parts, groups):
        command = [*_command(experiment, part, overrides), f"population.only=[{','.join(group)}]"]
        print(f"{part.name}: {' '.join(command[2:])}", flush=True)
        procs.append(subprocess.Popen(command, cwd=REPO, env=env))
    failed = _wait_all(procs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if failed is not None:
        raise SystemExit(
            f"{parts[failed]} failed (exit code {procs[failed].returncode}); the other parts were stopped. "
            f"Continue each with: python -m ctsim resume {run_dir}/part<i>"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parts, Timing(wall, cpu, processes=len(parts))


def _wait_all(procs: list[subprocess.Popen]) -> int | None:
    """Wait for every process; at the first failure stop the rest and return its index."""
    while True:
        codes = [p.poll() for p in procs]
        bad = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
        if bad is not None:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait()
            return bad
        if all(c == 0 for c in codes):
            return None
        time.sleep(0.5)


def _fresh(experiment: str, tag: str, run_dir: Path | None) -> Path:
    """``run_dir``, refused if it exists; without one a new folder under results/runs/, claimed (made)
    here so that two studies started in the same second never share one."""
    if run_dir is None:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        return Path(unique_dir(str(REPO / "results" / "runs" / experiment / f"{stamp}_{tag}"))).resolve()
    if run_dir.exists():
        raise SystemExit(
            f"--into {run_dir}: the folder exists; give a new one (or resume it with "
            f"python -m ctsim resume {run_dir})"
        )
    return run_dir.resolve()


def _command(experiment: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "ctsim", f"experiment={experiment}", f"hydra.run.dir={run_dir}",
        "progress=false", *overrides,
    ]  # fmt: skip


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


def size_flags(parser: argparse.ArgumentParser, quick: str, jobs: bool = False) -> None:
    """``--full`` (the study at full size: Modyn's setup); without it the quick form (``quick`` says what
    that is, e.g. :func:`quick_knobs`; its experiment file ``conf/experiment/<study>_quick.yaml`` says
    what each change costs); ``--into``; with ``jobs``, ``--jobs`` (for studies of several variants)."""
    parser.add_argument("--full", action="store_true", help=f"full size (default: the quick form: {quick})")
    parser.add_argument(
        "--into", type=Path, help="a new run folder to run in (default: results/runs/<experiment>/<stamp>)"
    )
    if not jobs:
        return
    parser.add_argument(
        "--jobs",
        type=_positive,
        help="runs side by side, the variants split among them (default: one per CPU core for a quick form "
        "without a GPU, else 1)",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of runs, at least 1, got {text!r}")
    return int(text)


def jobs_of(args: argparse.Namespace) -> int:
    """``--jobs``, or :func:`default_jobs` for the size asked for."""
    return args.jobs if args.jobs is not None else default_jobs(args.full)


def experiment_name(study: str, full: bool) -> str:
    """The experiment a study's script runs: ``<study>`` at full size, else ``<study>_quick``."""
    return study if full else f"{study}_quick"


# A GPU run carries the working tree and the wheels in 64 MiB (experiments/gpu_check.sh): report.html
# embeds the plots again, as base64, so a reference keeps compare.md, compare.parquet and plots/ only.
REFERENCE_LEAVES_OUT = (
    "report.html is not kept here (it embeds plots/ again): `ctsim compare` on the run folder(s) makes it."
)


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
    (out / "report.html").unlink()  # see REFERENCE_LEAVES_OUT
    flag = f" --candidates {candidates}" if candidates else ""
    listed = " ".join(str(d) for d in shown)
    (out / "README.md").write_text(
        f"# {study}{' (quick form)' if quick else ''}: comparison\n\n"
        f"Made by `{command}` (run folder(s) `{listed}`, not committed), then "
        f"`ctsim compare {listed}{flag} --out {out.relative_to(REPO)}`. "
        f"See compare.md for the table and plots/ for the figures. {REFERENCE_LEAVES_OUT}\n"
    )
    print(console(comparison, table, out))
    return out
