"""``python -m ctsim resume RUN_DIR`` and ``python -m ctsim reproduce RUN_DIR --pipeline P --seed S
--generation K``.

Both rebuild the run from what its ``status.json`` recorded (the config name, the command line's
overrides, the working folder) and replay it. The replay is deterministic: it makes the same
decisions, and a generation that was saved is loaded instead of trained (:mod:`ctsim.app.execute`,
:class:`~ctsim.registry.store.RunStore`).

* **resume** finishes an interrupted or killed run: it trains only what was not saved, evaluates only
  what was not written, and writes the final tables. It first refuses a run whose code, config or
  data changed, naming what differs, and leaves the folder untouched.
* **reproduce** trains one generation again, in the engine call that made it (the same jobs together,
  so the same arithmetic), and says whether its parameters equal the saved checkpoint. It writes
  nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ctsim.registry import provenance
from ctsim.registry.layout import read_status
from ctsim.registry.store import ResumeError, RunStore, load_state
from ctsim.validation import ConfigError, unwritable

RUNNING = "running"


def load_plan(run_dir: Path, record: dict):
    """The run's plan, built again from its recorded command line, in its recorded working folder."""
    from hydra import initialize_config_dir

    from ctsim.app.build import build_run
    from ctsim.app.compose import CONF_DIR, compose_run

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="ctsim"):
        cfg, problems = compose_run(record["config_name"], list(record["overrides"]))
        if cfg is None or problems:
            lines = "; ".join(str(p) for p in problems)
            raise ResumeError(f"{run_dir}: its command line no longer composes with today's configs: {lines}")
        try:
            return build_run(cfg, list(record["overrides"]), record["config_name"])
        except ConfigError as e:
            raise ResumeError(f"{run_dir}: its config no longer builds: {e}") from None


def run_record(run_dir: Path) -> dict:
    """The run's ``status.json``, checked to be a run ctsim can replay."""
    if not run_dir.is_dir():
        raise ResumeError(f"{run_dir}: no such folder; expected a run folder (results/runs/<name>/<time>/)")
    record = read_status(run_dir)
    if record is None:
        raise ResumeError(f"{run_dir} is not a ctsim run folder: it has no readable status.json")
    if "config" not in record or "overrides" not in record:
        raise ResumeError(
            f"{run_dir}: its status.json does not record the run's config (a run made before ctsim could "
            "resume); start it again"
        )
    return record


def changes(run_dir: Path, record: dict, plan) -> list[str]:
    """What differs between the run as recorded and as it would run today: code files and config keys."""
    return code_changes(record) + config_changes(record, plan)


def code_changes(record: dict) -> list[str]:
    """The code files that differ from the run's: ctsim's, and the user's own modules its config names
    (``my_net.py``, shown by its full path; a run recorded before ctsim hashed them has none to compare).
    Called in the run's working folder, before the run is built: an edited module may no longer build."""
    found = _differ(record.get("code_files", {}), provenance.code_files())
    saved = record.get("user_files")
    if saved is not None:
        found += _differ(saved, provenance.user_files(record["config"], Path.cwd()), Path.cwd())
    return found


def config_changes(record: dict, plan) -> list[str]:
    """The resolved config keys of the run and its variants that differ from the run's."""
    return [f"config {d}" for d in provenance.differences(record["config"], plan.config)]


def _differ(saved: dict[str, str], now: dict[str, str], folder: Path | None = None) -> list[str]:
    """``code PATH: changed`` (or added, removed) for each file whose hash differs; a path relative to
    ``folder`` is shown in it.

    >>> _differ({"a.py": "1", "b.py": "2"}, {"a.py": "1", "b.py": "3", "c.py": "4"})
    ['code b.py: changed', 'code c.py: added']
    >>> _differ({"my_net.py": "1"}, {}, Path("/home/me"))
    ['code /home/me/my_net.py: removed']
    """
    how = {True: "changed", False: "added"}
    return [
        f"code {folder / path if folder else path}: {how[path in saved] if path in now else 'removed'}"
        for path in sorted(set(saved) | set(now))
        if saved.get(path) != now.get(path)
    ]


@contextlib.contextmanager
def working_folder(path: str | None) -> Iterator[None]:
    """Run in the folder the run was started from, so its relative paths mean what they meant, and its
    own modules (``_target_: my_model.Net``) import as they did: ``python -m ctsim`` had that folder on
    the import path, which ``ctsim resume`` or a resume from another folder would not."""
    before = Path.cwd()
    folder = path if path and Path(path).is_dir() else None
    if folder is not None:
        os.chdir(folder)
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        os.chdir(before)
        if folder is not None:
            sys.path.remove(folder)


def _alive(record: dict) -> bool:
    """Whether the process that wrote ``record`` still runs on this machine."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != os.uname().nodename or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def resume(run_dir: str | Path, echo: bool = True):
    """Finish an interrupted or killed run; see the module docstring."""
    from ctsim.app.execute import execute

    run_dir = Path(run_dir).resolve()
    record = run_record(run_dir)
    status = record.get("status")
    if status == "finished":
        raise ResumeError(f"{run_dir}: the run has finished; there is nothing to resume")
    if status == RUNNING and _alive(record):
        raise ResumeError(f"{run_dir}: the run is still running (process {record['pid']}); stop it first")
    why = unwritable(run_dir)
    if why is not None:
        raise ResumeError(f"{run_dir}: a resume writes into the run folder, but {why}")
    with working_folder(record.get("cwd")):
        found = code_changes(record)  # first: a user's module that was edited may no longer build
        if not found:
            plan = load_plan(run_dir, record)
            found = config_changes(record, plan)
        if found:
            raise ResumeError(
                f"{run_dir} was made by other code or config, so a resume would not give its results:\n  "
                + "\n  ".join(found)
            )
        threads = record.get("cpu_threads")
        if echo and threads not in (None, torch.get_num_threads()) and plan.engine.device.type == "cpu":
            now = torch.get_num_threads()
            print(
                f"ctsim: warning: the run used {threads} CPU thread(s), this process {now}; what is "
                f"trained again may round differently (set OMP_NUM_THREADS={threads})",
                file=sys.stderr,
            )
        return execute(
            plan, run_dir, command=record.get("command", "python -m ctsim"), echo=echo, resume=True
        )


class _Done(Exception):
    """The replay reached the generation to reproduce."""


class _Reproducer:
    """A recorder that loads every saved generation, except the decision point to reproduce, which
    the replay trains again (all its jobs, in one call, as the run did); then it stops the replay."""

    def __init__(self, store: RunStore, point: int):
        self.store, self.point = store, point
        self.made: list = []

    def saved(self, pipeline: int, generation: int, keys: torch.Tensor):
        row = self.store.row(pipeline, generation)
        if row is None:
            raise ResumeError(
                f"the replay trains {self.store.pipelines[pipeline].name} generation {generation}, "
                "which the run did not save"
            )
        if row["trigger_batch"] == self.point:
            return None
        trained = self.store.saved(pipeline, generation, keys)
        if trained is None:
            p = self.store.pipelines[pipeline]
            raise ResumeError(
                f"{p.name} seed {p.seed} generation {generation}: its checkpoint was not kept or is corrupt, "
                "and the replay needs it; reproduce needs every earlier checkpoint (output.checkpoints=all)"
            )
        return trained

    def record(self, gens: Sequence) -> None:
        self.made = list(gens)
        raise _Done

    def saved_evaluation(self, gens: Sequence) -> None:
        return None

    def record_evaluation(self, *args: object) -> None:
        pass


def reproduce(run_dir: str | Path, pipeline: str, seed: int, generation: int) -> tuple[bool, str]:
    """Train one generation again; whether it equals its checkpoint, and a report."""
    from ctsim.simulation import simulate

    run_dir = Path(run_dir).resolve()
    record = run_record(run_dir)
    with working_folder(record.get("cwd")):
        plan = load_plan(run_dir, record)
        found = changes(run_dir, record, plan)
        index = next((i for i, p in enumerate(plan.pipelines) if (p.name, p.seed) == (pipeline, seed)), None)
        if index is None:
            names = sorted({f"{p.name} (seed {p.seed})" for p in plan.pipelines})
            raise ResumeError(
                f"--pipeline {pipeline} --seed {seed}: not in this run; its pipelines: {', '.join(names)}"
            )
        stream = plan.stream.build(plan.dataset.load())
        store = RunStore(run_dir, stream, plan.pipelines)
        row = store.row(index, generation)
        if row is None:
            raise ResumeError(f"--generation {generation}: {pipeline} seed {seed} saved no such generation")
        path = run_dir / (row["checkpoint"] or "")
        if not row["checkpoint"] or not path.is_file():
            raise ResumeError(
                f"{pipeline} seed {seed} generation {generation}: its checkpoint was not kept "
                "(output.checkpoints), so there is nothing to compare with"
            )
        reproducer = _Reproducer(store, row["trigger_batch"])
        with contextlib.suppress(_Done):
            simulate(stream, plan.pipelines, plan.engine, progress=False, recorder=reproducer)
    gen = next(g for g in reproducer.made if (g.pipeline, g.index) == (index, generation))
    saved, again = load_state(path), gen.trained.state
    differ = {
        k: float((saved[k].double() - again[k].double()).abs().max())
        for k in saved
        if not torch.equal(saved[k], again[k])
    }
    jobs = len(reproducer.made)
    lines = [
        f"{pipeline} seed {seed} generation {generation}: trained again on {len(row['keys'])} samples, "
        f"in its decision point's engine call ({jobs} job(s), engine {plan.engine.name} "
        f"on {plan.engine.device})",
    ]
    if found:
        lines.append("note: the code or config differs from the run's:\n  " + "\n  ".join(found))
    if not differ:
        lines.append(f"parameters equal the saved checkpoint bitwise ({len(saved)} tensors): {path}")
    else:
        worst = max(differ.values())
        lines.append(
            f"parameters differ from the saved checkpoint in {len(differ)} of {len(saved)} tensors "
            f"(largest difference {worst:.3g}): {path}"
        )
    return not differ, "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``ctsim resume|reproduce ...`` (``argv`` starts with the subcommand); exit code 0, 1 (reproduce:
    parameters differ) or 2."""
    from ctsim.app.commands import parser

    command, rest = argv[0], list(argv[1:])
    args = parser(command).parse_args(rest)
    args.command = command
    try:
        if args.command == "resume":
            resume(args.run_dir)
            return 0
        same, report = reproduce(args.run_dir, args.pipeline, args.seed, args.generation)
        print(report)
        return 0 if same else 1
    except ResumeError as e:
        print(f"ctsim {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"ctsim {args.command}: interrupted; resume again with python -m ctsim resume {args.run_dir}",
            file=sys.stderr,
        )
        return 130
