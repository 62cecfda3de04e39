"""Execute a built run: load the stream, simulate, write tables, checkpoints, plots and summaries."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ctsim.app.build import RunPlan
from ctsim.registry import provenance
from ctsim.registry.layout import STATUS, TABLE_VERSION, read_status
from ctsim.registry.store import (
    ResumeError,
    RunStore,
    clear_outputs,
    now,
    write_new,
    write_status,
    write_tables,
)
from ctsim.registry.tables import build_tables
from ctsim.reports.summary import console_summary, markdown_summary
from ctsim.simulation import SimulationResult, simulate, stream_problems
from ctsim.stream import Stream
from ctsim.validation import ConfigError


class NoAccuracy(RuntimeError):
    """The run finished, but no pipeline has an accuracy to report; the message says why (raised by the
    callers of :func:`execute`: the command line exits with code 1, :func:`ctsim.run` raises it)."""


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path
    tables: dict[str, pl.DataFrame]
    result: SimulationResult
    files: list[Path]
    summary: str
    store: RunStore
    no_accuracy: str | None = None  # why no pipeline has an accuracy, if none has (see no_accuracy)


def execute(
    plan: RunPlan,
    out_dir: str | Path,
    command: str = "python -m ctsim",
    echo: bool = True,
    resume: bool = False,
) -> RunOutcome:
    """Run ``plan`` and write every output into ``out_dir`` (which must not hold another run's results).

    The run is recorded as it goes (:mod:`ctsim.registry.store`). ``status.json`` says where it is:
    ``running``, then ``finished``, ``interrupted`` (Ctrl-C or SIGTERM) or ``failed`` (with the
    error). A run killed outright stays ``running``; either way ``resume`` finishes it from what it
    saved (:mod:`ctsim.app.resume`, which checks first that the code and config are the run's).
    """
    out_dir = Path(out_dir)
    if not resume and (out_dir / "evals.parquet").exists():
        raise FileExistsError(f"{out_dir} already holds a run's results; ctsim never overwrites them")
    start = time.perf_counter()
    seeds = sorted({p.seed for p in plan.pipelines})
    earlier = read_status(out_dir) if resume else None
    if earlier is None:
        record = provenance.record(
            plan.config, plan.overrides, plan.config_name, seeds, plan.engine.device, command
        )
        write_status(out_dir, "running", attempts=1, tables=TABLE_VERSION, **record, **_process())
    header = (
        f"{len(plan.variants)} pipeline(s) × {len(seeds)} seed(s) · dataset {plan.dataset.name} · "
        f"engine {plan.engine.name} on {plan.engine.device}"
    )
    with _sigterm_interrupts():
        try:  # from the first line the user sees: a Ctrl-C right after it marks the run interrupted
            if echo:
                verb = "resuming" if resume else "run folder"
                print(f"ctsim · {plan.name} · {header} · {verb} {out_dir}/", flush=True)
            stream = plan.stream.build(plan.dataset.load())
            fingerprint = provenance.data_hash(stream.x, stream.y, stream.time, stream.slice)
            if earlier is not None:
                if earlier.get("data_hash") not in (None, fingerprint):
                    raise ResumeError(
                        f"{out_dir}: the dataset is not the one the run was made with (its fingerprint "
                        "changed): a resume would not give the run's results. Start a new run."
                    )
                clear_outputs(out_dir)
                attempts = earlier.get("attempts", 1) + 1
                write_status(out_dir, "running", attempts=attempts, resumed=now(), **_process())
            # the data's ground truth, for reports that read the run back (ctsim.reports.compare)
            changes = [dataclasses.asdict(cp) for cp in stream.change_points]
            write_status(out_dir, "running", data_hash=fingerprint, change_points=changes)
            # what the policies cannot do on this stream (a window larger than it): before any training
            problems = evaluation_problems(stream, plan) + stream_problems(stream, plan.pipelines)
            if not problems:
                outcome = _execute(plan, stream, out_dir, command, header, start)
        except ResumeError as e:
            if read_status(out_dir) != earlier:  # it had begun: the replay diverged from the saved run
                write_status(out_dir, "failed", error=f"{type(e).__name__}: {e}")
            raise
        except KeyboardInterrupt:
            write_status(out_dir, "interrupted")
            raise
        except BaseException as e:
            write_status(out_dir, "failed", error=f"{type(e).__name__}: {e}")
            raise
    if problems:
        if earlier is None:
            (out_dir / STATUS).unlink()  # nothing ran: the folder holds nothing of the run's
        raise ConfigError(problems)
    write_status(out_dir, "finished", wall_seconds=round(time.perf_counter() - start, 3), error=None)
    outcome.store.prune(plan.checkpoints)
    outcome.store.close()
    if echo:
        print(outcome.summary)
    why = no_accuracy(outcome.tables["cost"], stream.num_slices)
    if why is not None:
        return dataclasses.replace(outcome, no_accuracy=f"{out_dir}: no pipeline has an accuracy: {why}")
    return outcome


def evaluation_problems(stream: Stream, plan: RunPlan) -> list:
    """What leaves nothing to measure accuracy on, found once the data is loaded, before any training."""
    from ctsim.validation import Problem

    if bool(stream.is_test.any()):
        return []
    value = plan.stream.test_fraction
    expected = "a fraction in (0, 1): no sample is held out for evaluation, so no accuracy can be measured"
    return [Problem("stream.test_fraction", value, expected)]


def no_accuracy(cost: pl.DataFrame, slices: int) -> str | None:
    """Why no pipeline of a finished run has a composite accuracy (None if one has): per pipeline, no model
    trained, or no slice left after its models' training data to evaluate them on.

    >>> cost = pl.DataFrame({"pipeline": ["every_5"], "triggers": [0], "composite_accuracy": [None]})
    >>> no_accuracy(cost, 2)
    'every_5 trained no model in the 2 slices (its trigger never fired): choose a trigger that fires sooner'
    >>> no_accuracy(cost.with_columns(skipped=pl.lit(3)), 2)  # doctest: +ELLIPSIS
    "every_5's trigger fired 3 times, but its selection chose no samples (skipped.parquet): a selection ..."
    """
    if cost.filter(pl.col("composite_accuracy").is_not_null()).height:
        return None
    reasons = []
    for row in cost.unique("pipeline", keep="first", maintain_order=True).iter_rows(named=True):
        name = row["pipeline"]
        if not row["triggers"] and row.get("skipped"):
            reasons.append(
                f"{name}'s trigger fired {row['skipped']} times, but its selection chose no samples "
                "(skipped.parquet)"
            )
        elif not row["triggers"]:
            reasons.append(f"{name} trained no model in the {slices} slices (its trigger never fired)")
        elif row.get("nonfinite_generations") == row["triggers"]:
            reasons.append(f"every generation of {name} went non-finite (generations.parquet: status)")
        else:
            reasons.append(f"{name} trained on data up to the last slice: no later slice tests its models")
    hints = {
        "never fired": "choose a trigger that fires sooner",
        "chose no samples": "a selection that keeps the data it is given",
        "non-finite": "a smaller learning rate",
        "no later slice": "a stream with more slices, or a trigger that fires sooner",
    }
    hint = ", or ".join(h for key, h in hints.items() if any(key in r for r in reasons))
    return "; ".join(reasons) + f": {hint}"


def _process() -> dict:
    """Which process runs it: a resume refuses a run whose process is still alive."""
    return {"pid": os.getpid(), "host": os.uname().nodename}


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a cluster pre-empting the job, ``kill``) stops the run as Ctrl-C does: ``interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(
    plan: RunPlan, stream: Stream, out_dir: Path, command: str, header: str, start: float
) -> RunOutcome:
    store = RunStore(out_dir, stream, plan.pipelines)
    result = simulate(
        stream,
        plan.pipelines,
        plan.engine,
        progress=plan.progress,
        recorder=store,
        eval_chunk=plan.eval_chunk,
    )
    checkpoints = store.kept(plan.checkpoints)
    tables = build_tables(result, checkpoints)
    files = write_tables(tables, out_dir)
    files += [out_dir / rel for rel, _ in checkpoints.values() if rel is not None]
    if plan.plots:
        from ctsim.reports import plots  # seaborn takes a second and a half to import: only when drawing

        files += plots.draw_all(tables, stream.change_points, out_dir / "plots")

    header += (
        f" · {len(stream.y):,} samples, {stream.num_slices} slices, {len(stream.batches)} arrival batches"
    )
    if store.reused or store.retrained:
        header += f" · resumed: {store.reused} generation(s) loaded, {store.trained} trained"
    summary_path = out_dir / "summary.md"
    files.append(summary_path)
    text = markdown_summary(
        plan.name,
        header,
        command,
        [(v.name, v.overrides) for v in plan.variants],
        plan.settings,
        tables["cost"],
        tables["quality"],
        stream.change_points,
        stream.slice_labels,
        files,
        out_dir,
        tables["metrics"],
        tables["evals"],
    )
    write_new(summary_path, lambda p: p.write_text(text))
    wall = time.perf_counter() - start  # data loading included
    summary = console_summary(plan.name, header, tables["cost"], out_dir, files, wall)
    return RunOutcome(out_dir, tables, result, files, summary, store)
