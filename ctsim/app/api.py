"""ctsim from Python: :func:`run` a simulation and get its tables back as polars frames; :func:`load` a run.

    >>> import ctsim
    >>> result = ctsim.run(["dataset=sea", "trigger=drift", "dataset.size=0.1"])  # doctest: +SKIP
    >>> result.cost.select("pipeline", "triggers", "composite_accuracy")  # doctest: +SKIP

:func:`run` takes the overrides of a command line (``ctsim dataset=sea trigger=drift`` is
``ctsim.run(["dataset=sea", "trigger=drift"])``), checks them as the command line does, runs, and writes
the same run folder. A bad input raises :class:`~ctsim.validation.ConfigError` (a ``ValueError``) whose
message has one line per problem, as the command line prints it; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

TABLES = ("evals", "generations", "cost", "metrics", "quality", "lineage", "skipped")  # registry.layout


def _table(name: str, text: str) -> property:
    return property(lambda self: self.table(name), doc=f"``{name}.parquet``: {text}")


class Result:
    """A run folder and its tables, each read when first asked for (a polars DataFrame).

    ``result.evals``, ``.generations``, ``.cost``, ``.metrics``, ``.quality``, ``.lineage``, ``.skipped``
    are the run's tables (their columns are documented with the run folder's outputs); ``.runs`` is one
    row describing the run; ``.status`` is its ``status.json``. An unfinished run gives what it saved.
    """

    def __init__(self, run_dir: str | Path):
        from ctsim.registry.read import load as load_tables

        self.run_dir = Path(run_dir)
        self._lazy = load_tables(self.run_dir)  # raises FileNotFoundError for a folder that is no run
        self._read: dict[str, pl.DataFrame] = {}

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

        return read_status(self.run_dir) or {}

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

    given = complete([str(o) for o in overrides])
    if config_dir is not None:
        given.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    named = Path(out_dir).resolve() if out_dir is not None else None
    if named is not None:
        given.append("hydra.run.dir='" + str(named).replace("\\", "\\\\").replace("'", "\\'") + "'")
    existed = named is not None and named.exists()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="ctsim"):
        cfg, problems = compose_run("config", given)
        ConfigError.raise_all(problems)
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
