"""Execute a built run: load the stream, simulate, write tables, checkpoints, plots and summaries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from ctsim import plots
from ctsim.build import RunPlan
from ctsim.config import ConfigError
from ctsim.registry import STATUS, build_tables, write_new, write_status, write_tables
from ctsim.report import console_summary, markdown_summary
from ctsim.simulation import SimulationResult, simulate, stream_problems
from ctsim.stream import Stream


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path
    tables: dict[str, pl.DataFrame]
    result: SimulationResult
    files: list[Path]
    summary: str


def execute(
    plan: RunPlan, out_dir: str | Path, command: str = "python -m ctsim", echo: bool = True
) -> RunOutcome:
    """Run ``plan`` and write every output into ``out_dir`` (which must not hold another run's results).

    ``status.json`` says where the run is: ``running``, then ``finished``, ``interrupted`` (Ctrl-C)
    or ``failed`` (with the error). A run killed outright stays ``running``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "evals.parquet").exists():
        raise FileExistsError(f"{out_dir} already holds a run's results; ctsim never overwrites them")
    start = time.perf_counter()
    write_status(out_dir, "running", command=command)
    seeds = sorted({p.seed for p in plan.pipelines})
    header = (
        f"{len(plan.variants)} pipeline(s) × {len(seeds)} seed(s) · dataset {plan.dataset.name} · "
        f"engine {plan.engine.name} on {plan.engine.device}"
    )
    if echo:
        print(f"ctsim · {plan.name} · {header} · run folder {out_dir}/", flush=True)
    try:
        stream = plan.stream.build(plan.dataset.load())
        # what the policies cannot do on this stream (a window larger than it): before any training
        problems = stream_problems(stream, plan.pipelines)
        if not problems:
            outcome = _execute(plan, stream, out_dir, command, header, start)
    except KeyboardInterrupt:
        write_status(out_dir, "interrupted", command=command)
        raise
    except BaseException as e:
        write_status(out_dir, "failed", command=command, error=f"{type(e).__name__}: {e}")
        raise
    if problems:
        (out_dir / STATUS).unlink()  # nothing ran: the folder holds nothing of the run's
        raise ConfigError(problems)
    write_status(out_dir, "finished", command=command, wall_seconds=round(time.perf_counter() - start, 3))
    if echo:
        print(outcome.summary)
    return outcome


def _execute(
    plan: RunPlan, stream: Stream, out_dir: Path, command: str, header: str, start: float
) -> RunOutcome:
    result = simulate(stream, plan.pipelines, plan.engine, progress=plan.progress)

    checkpoints = save_checkpoints(result, out_dir, plan.checkpoints)
    tables = build_tables(result, checkpoints)
    files = write_tables(tables, out_dir)
    files += [out_dir / p for p in checkpoints.values()]
    if plan.plots:
        files += plots.draw_all(tables, stream.change_points, out_dir / "plots")

    header += (
        f" · {len(stream.y):,} samples, {stream.num_slices} slices, {len(stream.batches)} arrival batches"
    )
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
    )
    write_new(summary_path, lambda p: p.write_text(text))
    wall = time.perf_counter() - start  # data loading included
    summary = console_summary(plan.name, header, tables["cost"], out_dir, files, wall)
    return RunOutcome(out_dir, tables, result, files, summary)


def save_checkpoints(result: SimulationResult, out_dir: Path, which: str) -> dict[tuple[int, int], str]:
    """Save generation states (``all``, each pipeline's ``last``, or ``none``); paths relative to out_dir."""
    if which == "none":
        return {}
    last = {g.pipeline: g.index for g in result.generations}
    saved = {}
    for gen in result.generations:
        if which == "last" and last[gen.pipeline] != gen.index:
            continue
        pipeline = result.pipelines[gen.pipeline]
        rel = f"checkpoints/{pipeline.name}/seed{pipeline.seed}/gen{gen.index:04d}.pt"
        write_new(out_dir / rel, lambda p, state=gen.trained.state: torch.save(state, p))
        saved[(gen.pipeline, gen.index)] = rel
    return saved
