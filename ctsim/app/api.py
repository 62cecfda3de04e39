"""ctsim from Python: :func:`run` a simulation and get its tables back as polars frames; :func:`load` a run.

    >>> import ctsim
    >>> result = ctsim.run(["dataset=sea", "trigger=drift", "dataset.size=0.1"])  # doctest: +SKIP
    >>> result.cost.select("pipeline", "triggers", "composite_accuracy")  # doctest: +SKIP

:func:`run` takes the overrides of a command line (``ctsim dataset=sea trigger=drift`` is
``ctsim.run(["dataset=sea", "trigger=drift"])``), checks them as the command line does, runs, and writes
the same run folder. A bad input raises :class:`~ctsim.validation.ConfigError` (a ``ValueError``) whose
message has one line per problem, as the command line prints it; nothing is written then.
:meth:`Result.model` gives a generation's trained model back, its checkpoint loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    import torch

    from ctsim.validation import Problem

TABLES = ("evals", "generations", "cost", "metrics", "quality", "lineage", "skipped")  # registry.layout


def _table(name: str, text: str) -> property:
    return property(lambda self: self.table(name), doc=f"``{name}.parquet``: {text}")


class Result:
    """A run folder and its tables, each read when first asked for (a polars DataFrame).

    ``result.evals``, ``.generations``, ``.cost``, ``.metrics``, ``.quality``, ``.lineage``, ``.skipped``
    are the run's tables (their columns are documented with the run folder's outputs); ``.runs`` is one
    row describing the run; ``.status`` is its ``status.json``. An unfinished run gives what it saved.
    :meth:`model` builds a generation's model from its checkpoint.
    """

    def __init__(self, run_dir: str | Path):
        from ctsim.registry.read import load as load_tables

        if isinstance(run_dir, Result):
            run_dir = run_dir.run_dir
        if not isinstance(run_dir, (str, Path)):
            raise TypeError(f"run_dir: expected a run folder (a str or Path), got {type(run_dir).__name__}")
        self.run_dir = Path(run_dir)
        self._lazy = load_tables(self.run_dir)  # raises FileNotFoundError for a folder that is no run
        self._read: dict[str, pl.DataFrame] = {}
        self._where = self.run_dir.resolve()  # still found after the notebook changes its folder

    def table(self, name: str) -> pl.DataFrame:
        """One table by name (``"evals"``, ``"cost"``, ...)."""
        if name not in self._lazy:
            raise KeyError(f"{name!r}: no such table; a run has {sorted(self._lazy)}")
        if name not in self._read:
            self._read[name] = self._lazy[name].collect()
        return self._read[name]

    @cached_property
    def status(self) -> dict:
        """The run's ``status.json``: status, config, overrides, versions, timings."""
        from ctsim.registry.layout import read_status

        return read_status(self._where) or {}

    def model(
        self, pipeline: str | None = None, seed: int | None = None, generation: int | None = None
    ) -> torch.nn.Module:
        """A generation's model, built as the run built it, its checkpoint loaded, in eval mode.

        ``pipeline`` and ``seed`` may be left out when the run has only one; ``generation`` defaults to
        the pipeline's last. The model is rebuilt from the run's recorded config (its dataset gives the
        input shape and class count), so the run's data and code must still be there. Raises
        ``LookupError`` naming what the run has, for a pipeline, seed or generation it does not have,
        or a checkpoint it did not keep (``output.checkpoints``).
        """
        row = self._generation(pipeline, seed, generation)
        where = f"{row['pipeline']} seed {row['seed']} generation {row['generation']}"
        path = self._where / (row["checkpoint"] or "")
        if not row["checkpoint"] or not path.is_file():
            kept = self.status.get("config", {}).get("run", {}).get("output", {}).get("checkpoints")
            raise LookupError(
                f"{where}: its checkpoint was not kept (output.checkpoints={kept}); "
                f"the kept ones are the rows of .generations with a checkpoint"
            )
        return _built_model(self._where, self.status, row["pipeline"], row["seed"], path)

    def _generation(self, pipeline: str | None, seed: int | None, generation: int | None) -> dict:
        """The generations row of ``pipeline``, ``seed`` and ``generation`` (see :meth:`model`)."""
        import polars as pl

        gens = self.generations
        pipeline = _pick("pipeline", pipeline, gens["pipeline"].unique().sort().to_list(), "the run")
        gens = gens.filter(pl.col("pipeline") == pipeline)
        seed = _pick("seed", seed, gens["seed"].unique().sort().to_list(), f"pipeline {pipeline!r}")
        gens = gens.filter(pl.col("seed") == seed).sort("generation")
        if generation is None:
            return gens.row(-1, named=True)
        found = gens.filter(pl.col("generation") == generation)
        if found.is_empty():
            have = gens["generation"].to_list()
            raise LookupError(
                f"generation={generation!r}: {pipeline} seed {seed} has no such generation; "
                f"it has {_spans(have)}"
            )
        return found.row(0, named=True)

    evals = _table("evals", "one row per pipeline × seed × generation × slice × metric")
    generations = _table("generations", "one row per trained generation")
    cost = _table("cost", "one row per pipeline and seed: triggers, samples, steps, FLOPs, seconds, accuracy")
    metrics = _table("metrics", "continual-learning metrics per pipeline and seed (BWT, FWT, ...)")
    quality = _table("quality", "accuracy summaries per pipeline and seed")
    lineage = _table("lineage", "each generation's parent and training data")
    skipped = _table("skipped", "decisions that trained nothing, and why")
    runs = _table("runs", "one row: the run's name, status, command and times")

    def __repr__(self) -> str:
        return f"Result({str(self.run_dir)!r}, status={self.status.get('status')!r})"


def _pick(key: str, given: object, have: list, whose: str) -> object:
    """``given``, if ``whose`` (the run, a pipeline) has it; its only one, if ``given`` is None."""
    if not have:
        raise LookupError(f"{key}={given!r}: {whose} has trained no generation (yet)")
    if given is None and len(have) == 1:
        return have[0]
    if given is None:
        raise LookupError(f"{key}: {whose} has several, name one of {have}")
    if given not in have:
        raise LookupError(f"{key}={given!r}: {whose} has no such {key}; expected one of {have}")
    return given


def _spans(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _built_model(run_dir: Path, record: Mapping, pipeline: str, seed: int, path: Path) -> torch.nn.Module:
    """The model of ``pipeline`` and ``seed``, built from the run's recorded command line, with the
    checkpoint at ``path`` loaded."""
    from ctsim.app.resume import load_plan, working_folder
    from ctsim.registry.store import load_state

    if "config" not in record or "overrides" not in record:
        raise LookupError(f"{run_dir}: its status.json records no config, so its model cannot be built")
    with working_folder(record.get("cwd")):
        plan = load_plan(run_dir, dict(record))
        spec = next((p.model for p in plan.pipelines if (p.name, p.seed) == (pipeline, seed)), None)
        if spec is None:
            raise LookupError(f"{pipeline} seed {seed}: the run's config, built today, has no such pipeline")
        state = load_state(path)
        dtype = next((t.dtype for t in state.values() if t.is_floating_point()), None)
        model = spec.build(seed) if dtype is None else spec.build(seed, dtype=dtype)
    model.load_state_dict(state)
    return model.eval()


# The command line's flags, as ``ctsim.run`` takes them.
FLAGS = {
    "--config-dir": "config_dir=...",
    "-cd": "config_dir=...",
    "--multirun": "one ctsim.run call per job (a loop)",
    "-m": "one ctsim.run call per job (a loop)",
}


def _argument_problems(overrides: object, config_dir: str | Path | None) -> list[Problem]:
    """What is wrong with :func:`run`'s arguments themselves, before Hydra sees them."""
    from ctsim.validation import Problem

    if isinstance(overrides, (str, Mapping)) or not isinstance(overrides, Sequence):
        shown = repr(overrides) if len(repr(overrides)) < 80 else type(overrides).__name__
        expected = 'a list of the command line\'s overrides, e.g. ["dataset=sea", "trigger=drift"]'
        return [Problem("overrides", None, "", text=f"{shown} is not a list; expected {expected}")]
    problems = []
    for o in overrides:
        if not isinstance(o, str):
            problems.append(Problem("overrides", o, "strings in the command line's syntax (key=value)"))
        elif o.startswith("-"):
            flag = o.split("=", 1)[0]
            instead = FLAGS.get(flag, "an argument of ctsim.run, or nothing: run() takes overrides only")
            problems.append(Problem(o, None, "", text=f"a command-line flag, not an override; use {instead}"))
    if config_dir is not None and not Path(config_dir).is_dir():
        what = "a file" if Path(config_dir).exists() else "no such folder"
        problems.append(Problem("config_dir", str(config_dir), f"a folder of config files ({what})"))
    return problems


def _for_python(problem: Problem) -> Problem:
    """A composition problem as :func:`run` says it: it runs one job, and has no ``-m``."""
    from dataclasses import replace

    from ctsim.app.compose import SWEEP

    if problem.text == SWEEP:
        text = "several values are a sweep: ctsim.run runs one job, so call it once per value, "
        return replace(problem, text=text + "or write a list as key=[a,b]")
    return problem


def load(run_dir: str | Path) -> Result:
    """A run folder read back (finished or not): ``ctsim.load("results/runs/drift/2026-...")``."""
    return Result(run_dir)


def run(
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    echo: bool = False,
) -> Result:
    """Run a simulation from command-line overrides, in a new run folder; its :class:`Result`.

    ``config_dir``: a folder of your own config files, beside ctsim's ``conf/`` (the command line's
    ``--config-dir``). ``out_dir``: the run folder (new or empty); default
    ``results/runs/<name>/<time>/``, as the command line. ``echo``: print the run's first line and
    summary. Raises :class:`~ctsim.validation.ConfigError` on bad input, before anything is written.
    """
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from ctsim.app import cli  # registers the run folder's resolver (unique_dir)
    from ctsim.app.compose import CONF_DIR, complete, compose_run, config_problems, output_dir_problems
    from ctsim.validation import ConfigError

    ConfigError.raise_all(_argument_problems(overrides, config_dir))
    given = complete(list(overrides))
    if config_dir is not None:
        given.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    named = Path(out_dir).resolve() if out_dir is not None else None
    if named is not None:
        given.append("hydra.run.dir='" + str(named).replace("\\", "\\\\").replace("'", "\\'") + "'")
    existed = named is not None and named.exists()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="ctsim"):
        cfg, problems = compose_run("config", given)
        ConfigError.raise_all(_for_python(p) for p in problems)
        task = [str(o) for o in cfg.hydra.overrides.task]
        run_overrides = task + [o for o in given if o.startswith("hydra.searchpath")]
        ConfigError.raise_all(config_problems(cfg, run_overrides, "config") + output_dir_problems(cfg, False))
        from ctsim.app.build import build_run  # imports torch: only once the overrides make sense

        plan = build_run(cfg, run_overrides, "config")
        folder = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))  # the default claims a fresh folder
    for key in [k for k, v in cli._claimed.items() if Path(v) == folder]:
        del cli._claimed[key]  # the next call claims a folder of its own, even in the same second
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from ctsim.app.execute import execute

        outcome = execute(plan, folder, command=f"ctsim.run({task!r})", echo=echo)
    except ConfigError:  # found once the data is loaded, before any training: no folder left behind
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    if outcome.no_accuracy is not None:
        from ctsim.app.execute import NoAccuracy

        raise NoAccuracy(outcome.no_accuracy)
    return Result(folder)
