"""The run subcommand: ``ctsim [run] [experiment=NAME] [group=option ...] [key=value ...]`` (or
``python -m ctsim ...``; the other subcommands are in :mod:`ctsim.app.commands`).

The command line is first completed by the rule of :func:`ctsim.app.compose.complete` (which pipelines it
runs). Before Hydra creates a run folder, :func:`main` composes the same config with Hydra's compose API
and checks all of it (:mod:`ctsim.app.compose`, then :mod:`ctsim.app.build`), for every job of a sweep. A bad
input stops with exit code 2 and one line per problem, and leaves no folder behind. Only then does
Hydra take over (``@hydra.main``): it writes the run folder and calls :func:`_app`, which runs the plan
already built. A sweep's folder is claimed here, once, and handed to its jobs, so jobs that a launcher
runs in other processes write into it too. torch is imported only after the config composes, so
``--help`` and Hydra's own errors answer at once.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import hydra
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import ctsim.app.help  # noqa: F401  (registers ${ctsim_help:...}, which --help's template calls)
from ctsim.app.compose import (
    CONF_DIR,
    callback_problems,
    complete,
    compose_run,
    config_problems,
    option_files,
    output_dir_problems,
    pipeline_differences,
    subdir_problems,
    variants,
)
from ctsim.app.hydra_internals import args_parser, sweep_jobs
from ctsim.validation import ConfigError

if TYPE_CHECKING:
    from ctsim.app.build import RunPlan

THREADS = "CTSIM_THREADS"  # set for each job of a sweep whose jobs run side by side on one machine
_claimed: dict[str, str] = {}
_made: list[Path] = []  # the folders above a claimed run folder that unique_dir made (results/runs/time)
# a run folder the user named (hydra.run.dir), found new or empty by the preflight: did it exist?
_named: dict[Path, bool] = {}
_plans: dict[tuple[str, ...], RunPlan] = {}  # built by the preflight, keyed by the job's overrides


def unique_dir(path: str) -> str:
    """Claim a fresh directory for a run: ``path``, else ``path_2``, ``path_3``, …

    ``mkdir`` is atomic, so two runs started in the same second never share (or overwrite) a
    directory. The answer is remembered, so Hydra may resolve the setting more than once.
    """
    if path not in _claimed:
        candidate, n = Path(path), 1
        _made.extend(p.resolve() for p in candidate.parents if not p.exists())
        candidate.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                n += 1
                candidate = Path(f"{path}_{n}")
        _claimed[path] = str(candidate)
    return _claimed[path]


OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True)


def main(argv: list[str] | None = None) -> None:
    """``ctsim [run] ...`` / ``python -m ctsim ...``: check everything, then let Hydra run it.

    ``argv`` (default ``sys.argv[1:]``) is completed first (:func:`ctsim.app.compose.complete`): what it adds
    becomes part of the command line Hydra sees, the run records and a resume replays.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = args_parser().parse_args(argv)
    hydra_only = args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun
    if not (args.info or args.shell_completion or args.hydra_help):
        argv = _completed(argv, args)
        args = args_parser().parse_args(argv)
    sys.argv = [sys.argv[0] if sys.argv else "ctsim", *argv]  # what @hydra.main reads
    try:
        if args.help:
            _bare_group(args)  # --help trigger: a group named without an option
            composes(args)  # --help marks what the command line picks: it must compose
        first = None
        if not hydra_only:
            plans, first = preflight(args, build=not args.cfg)
            _plans.update(plans)
            if args.multirun and not args.cfg:
                sys.argv += _sweep_settings(args, first)
        try:
            _app()
        except SystemExit as e:
            if args.multirun and e.code not in (0, None):  # a job failed: compare those that finished
                from ctsim.reports.callback import after_failure

                after_failure()
            raise
        if args.multirun and not args.cfg:
            _exit_if_jobs_failed()
        if args.cfg == "job" and not hydra_only:
            print_pipelines(args)
    except KeyboardInterrupt:
        print("ctsim: interrupted before the run started; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None


def _completed(argv: list[str], args: argparse.Namespace) -> list[str]:
    """``argv`` with the overrides :func:`ctsim.app.compose.complete` adds (and its ``~experiment``)."""
    overrides = list(args.overrides)
    done = complete(overrides, args.config_name or "config")
    if done == overrides:
        return argv
    flags = argv[: len(argv) - len(overrides)] if argv[len(argv) - len(overrides) :] == overrides else None
    if flags is None:  # overrides mixed among flags: keep the flags where they are, replace the overrides
        flags = [a for a in argv if a not in overrides]
    return [*flags, *done]


def _sweep_settings(args: argparse.Namespace, cfg: DictConfig | None) -> list[str]:
    """Overrides a sweep's jobs need from the process that starts them: the sweep folder, claimed here once
    (a launcher's worker process would claim one of its own), and each job's thread count."""
    if cfg is None:
        return []
    out = []
    text = str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"])
    if text.startswith("${unique_dir:"):
        out.append(f"hydra.sweep.dir={_claimed_path(cfg)}")
    threads = job_threads(cfg, len(_jobs(args) or [None]))
    if threads is not None:
        out.append(f"++hydra.job.env_set.{THREADS}={threads}")
    return out


def _claimed_path(cfg: DictConfig) -> str:
    """The sweep folder, claimed (resolving the setting claims it), quoted for an override."""
    path = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_threads(
    cfg: DictConfig, jobs: int, cores: int | None = None, environ: Mapping[str, str] = os.environ
) -> int | None:
    """CPU threads for each job of a sweep whose launcher runs jobs side by side on this machine (joblib,
    submitit's local launcher): the cores shared out, ``cores // jobs at once``; None when jobs run one
    after another, on other machines, or the user chose (``OMP_NUM_THREADS`` or ``CTSIM_THREADS`` set).

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"hydra": {"launcher": {"_target_": "x.JoblibLauncher", "n_jobs": 2}}})
    >>> job_threads(cfg, jobs=6, cores=16, environ={}), job_threads(cfg, jobs=1, cores=16, environ={})
    (8, None)
    """
    if "OMP_NUM_THREADS" in environ or THREADS in environ:
        return None
    launcher = OmegaConf.select(cfg, "hydra.launcher") or {}
    target = str(launcher.get("_target_", ""))
    cores = cores or len(os.sched_getaffinity(0))
    if target.endswith("JoblibLauncher"):
        n = int(launcher.get("n_jobs", -1) or 1)
        at_once = n if n > 0 else max(1, cores + 1 + n)  # joblib: -1 = every core, -2 = all but one
    elif target.endswith("LocalLauncher"):  # submitit's: every job of the array at once, up to the limit
        at_once = int(launcher.get("array_parallelism", jobs) or jobs)
    else:
        return None
    at_once = min(at_once, jobs)
    return max(1, cores // at_once) if at_once > 1 else None


def preflight(
    args: argparse.Namespace, build: bool = True
) -> tuple[dict[tuple[str, ...], RunPlan], DictConfig | None]:
    """Every job's plan, built, and the first job's config; on any problem, print them all and exit with
    code 2.

    First what the command line means, without torch: overrides Hydra cannot apply, unknown keys,
    overrides a variant would replace, the run folder. Then, once that is clean (and with ``build``),
    every value, by building every object (this imports torch).
    """
    config_name = args.config_name or "config"
    jobs = _jobs(args)
    if jobs is None:
        return {}, None  # another sweeper expands the sweep: each job is checked when it starts
    composed, found = [], {}
    with _initialized():
        for i, job in enumerate(jobs):
            cfg, problems = compose_run(config_name, job)
            if cfg is not None:
                task = [str(o) for o in cfg.hydra.overrides.task]
                run_overrides = task + _search_path(job)
                problems += config_problems(cfg, run_overrides, config_name) + callback_problems(cfg)
                if i == 0 and build:
                    problems += output_dir_problems(cfg, args.multirun)
                    problems += subdir_problems(cfg, len(jobs)) if args.multirun else []
                    _note_named_folder(cfg, args.multirun)
                composed.append((cfg, task, run_overrides))
            _note(found, problems, i)
        if found:
            _exit_with(found, jobs)
        first = composed[0][0] if composed else None
        if not build:
            return {}, first
        from ctsim.app.build import build_run  # imports torch: only once the command line makes sense

        plans = {}
        for i, (cfg, task, run_overrides) in enumerate(composed):
            try:
                plans[tuple(task)] = build_run(cfg, run_overrides, config_name)
            except ConfigError as e:
                _note(found, e.problems, i)
    if found:
        _exit_with(found, jobs)
    return plans, first


def composes(args: argparse.Namespace) -> None:
    """Exit with code 2 and one line per problem if the command line does not compose (no traceback).

    Hydra's help composes the command line as it is, a sweep unexpanded, which it cannot do.
    """
    jobs = (_jobs(args) or [_overrides(args)]) if args.multirun else [_overrides(args)]
    found: dict[str, list[int]] = {}
    with _initialized():
        for i, job in enumerate(jobs):
            _note(found, compose_run(args.config_name or "config", job)[1], i)
    if found:
        _exit_with(found, jobs)
    if args.multirun and any(
        o.is_sweep_override() for o in OverridesParser.create().parse_overrides(_overrides(args))
    ):
        print("ctsim: --help shows what one run picks: leave out -m, one value per key", file=sys.stderr)
        raise SystemExit(2)


def _search_path(overrides: list[str]) -> list[str]:
    """The overrides that say where configs are: variants are composed with them too."""
    return [o for o in overrides if o.startswith("hydra.searchpath")]


def _note(found: dict[str, list[int]], problems: list, job: int) -> None:
    for p in problems:
        found.setdefault(str(p), []).append(job)


def _bare_group(args: argparse.Namespace) -> None:
    """``--help trigger``: a group named without ``=option`` is no override; say how to ask for it."""
    for word in args.overrides:
        options = [p.stem for p in option_files(word.replace(".", "/"))] if "=" not in word else []
        if options:
            print(
                f"ctsim: {word} is a group: --help lists its options; --help {word}={options[0]} shows "
                f"the keys of one (options: {', '.join(options)})",
                file=sys.stderr,
            )
            raise SystemExit(2)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The command line's overrides, with ``--config-dir`` as the search path entry it stands for."""
    overrides = list(args.overrides)
    if args.config_dir:
        overrides.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    return overrides


def _jobs(args: argparse.Namespace) -> list[list[str]] | None:
    """The overrides of each job: one for a run, the expanded sweep for ``-m`` (Hydra's basic sweeper)."""
    overrides = _overrides(args)
    if not args.multirun:
        return [overrides]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return [overrides]  # compose_run names the bad override
    if any(o.key_or_group.startswith("hydra/sweeper") for o in parsed):
        return None
    return sweep_jobs(parsed)


def _initialized() -> initialize_config_dir:
    return initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="ctsim")


def _exit_with(found: dict[str, list[int]], jobs: list[list[str]]) -> None:
    lines = []
    for text, where in found.items():
        if len(jobs) > 1 and len(where) < len(jobs):
            text += "  [sweep job " + ", ".join(f"#{i} ({' '.join(jobs[i])})" for i in where) + "]"
        lines.append(f"  {text}")
    print("ctsim: invalid config:\n" + "\n".join(lines), file=sys.stderr)
    raise SystemExit(2)


def print_pipelines(args: argparse.Namespace) -> None:
    """After ``--cfg job``'s run config: what each pipeline of the run changes in it."""
    config_name = args.config_name or "config"
    with _initialized():
        overrides = _overrides(args)
        cfg, problems = compose_run(config_name, overrides)
        if cfg is None:
            return
        task = [str(o) for o in cfg.hydra.overrides.task]
        found, more = variants(cfg, task + _search_path(overrides), config_name)
    problems += [p for p in more if p is not None]
    print("# Pipelines: each variant's settings where they differ from the run config above")
    for p in problems:
        print(f"# problem: {p}")
    if found:
        print(OmegaConf.to_yaml({"pipelines": pipeline_differences(found, cfg)}), end="")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    """The run itself, in the folder Hydra made for it."""
    from ctsim.app.build import build_run

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    out_dir = _shown(Path(hydra_cfg.runtime.output_dir))
    plan = _plans.pop(tuple(overrides), None)
    if plan is None:  # a job the preflight did not see (another sweeper or launcher)
        try:
            run_overrides = overrides + _search_path(list(hydra_cfg.overrides.hydra))
            plan = build_run(cfg, run_overrides, hydra_cfg.job.config_name)
        except ConfigError as e:
            _discard(out_dir)
            _stop(out_dir, str(e), 2, hydra_cfg.mode == RunMode.MULTIRUN)
            return
    command = " ".join(["python -m ctsim", *overrides])
    if os.environ.get(THREADS, "").isdigit():  # set by the sweep's start (job_threads): before any work
        import torch

        torch.set_num_threads(int(os.environ[THREADS]))
    with gpu_of_job(hydra_cfg):
        _execute(plan, out_dir, command, sweep=hydra_cfg.mode == RunMode.MULTIRUN)


def _execute(plan: RunPlan, out_dir: Path, command: str, sweep: bool = False) -> None:
    from ctsim.app.execute import execute

    try:
        outcome = execute(plan, out_dir, command=command)
    except ConfigError as e:
        # found once the data is loaded (a window larger than the stream), before any training
        _discard(out_dir)
        _stop(out_dir, str(e), 2, sweep)
        return
    except KeyboardInterrupt:
        print(
            f"ctsim: interrupted; the partial run is in {out_dir}/ (status.json: interrupted); "
            f"finish it with: python -m ctsim resume {out_dir}",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if outcome.no_accuracy is not None:  # the run finished and wrote its tables, but measured nothing
        _stop(out_dir, outcome.no_accuracy, 1, sweep)


def _stop(out_dir: Path, message: str, code: int, sweep: bool) -> None:
    """A run that gives no result: print why and exit with ``code``. In a sweep only this job stops: a
    SystemExit would end the whole sweep (Hydra's launchers catch exceptions, not exits) and the jobs
    after it would never run. The job's ``ctsim.log`` keeps the message, which the comparison lists, and
    the sweep exits with code 1 once every job ran (:func:`_exit_if_jobs_failed`)."""
    print(f"ctsim: {message}", file=sys.stderr, flush=True)
    if not sweep:
        raise SystemExit(code)
    if out_dir.is_dir():
        with open(out_dir / "ctsim.log", "a") as log:
            log.write(f"ctsim: {message.removeprefix(f'{out_dir}: ')}\n")  # the log is the job's own


def _exit_if_jobs_failed() -> None:
    """After a sweep whose every job ran: exit with code 1, naming the jobs that gave no result."""
    from ctsim.reports.callback import failed_jobs

    failed = failed_jobs()
    if failed:
        print(f"ctsim: {len(failed)} sweep job(s) gave no result:", file=sys.stderr)
        for job, why in failed:
            print(f"  {_shown(job)}: {why}", file=sys.stderr)
        raise SystemExit(1)


@contextmanager
def gpu_of_job(hydra_cfg: DictConfig, locks: Path | None = None) -> Iterator[int | None]:
    """In a sweep job on a machine with several GPUs: a GPU of its own, made the current device.

    Jobs that run side by side (``hydra/launcher=joblib hydra.launcher.n_jobs=<number of GPUs>``) each
    take the first GPU no other job of the sweep holds (a lock file per GPU in ``<sweep dir>/.gpus``,
    held while the job runs); with more jobs than GPUs, a job waits for GPU ``job.num % count``. So
    ``device=auto`` or ``cuda`` means that GPU. Nothing changes for a single run, or with one GPU (a
    SLURM job sees only the GPUs it was given).
    """
    import torch

    count = torch.cuda.device_count()
    if hydra_cfg.mode != RunMode.MULTIRUN or count < 2:
        yield None
        return
    folder = locks or Path(str(hydra_cfg.sweep.dir)) / ".gpus"
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"gpu{k}.lock", "a") for k in range(count)]  # noqa: SIM115 (held while it runs)
    try:
        taken = next((k for k, h in enumerate(handles) if _lock(h, wait=False)), None)
        if taken is None:
            taken = int(hydra_cfg.job.num) % count
            _lock(handles[taken], wait=True)
        torch.cuda.set_device(taken)
        yield taken
    finally:
        for h in handles:
            h.close()  # closing releases the lock


def _lock(handle: IO, wait: bool) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it is inside it (shorter to read), else as it is."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _note_named_folder(cfg: DictConfig, multirun: bool) -> None:
    """Remember a run folder the user named, found new or empty, and whether it existed (see _discard)."""
    text = str(OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"])
    if multirun or text.startswith("${unique_dir:"):
        return
    path = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).resolve()
    _named[path] = path.exists()


def _discard(out_dir: Path) -> None:
    """Undo a run folder that holds nothing but Hydra's own files: remove it if this process made it
    (claimed it, or the user named a folder that did not exist), with the empty folders made for it
    (``results/runs/<name>``), else empty it again, as it was found.

    So the same command, its value corrected, runs in the same folder.
    """
    hydra_files = {".hydra", "ctsim.log"}
    if not out_dir.is_dir() or not {p.name for p in out_dir.iterdir()} <= hydra_files:
        return
    resolved = out_dir.resolve()
    claimed = {Path(p).resolve() for p in _claimed.values()}
    if resolved in claimed or _named.get(resolved) is False:
        shutil.rmtree(out_dir)
        for folder in sorted(_made, key=lambda f: len(f.parts), reverse=True):  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):  # made for this run, and holding no other
                folder.rmdir()
    elif resolved in _named:
        shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
        (out_dir / "ctsim.log").unlink(missing_ok=True)
