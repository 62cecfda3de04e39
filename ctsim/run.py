"""Execute a built run: load the stream, simulate, write tables, checkpoints, plots and summaries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from ctsim import plots
from ctsim.build import RunPlan
from ctsim.registry import build_tables, write_new, write_tables
from ctsim.report import console_summary, markdown_summary
from ctsim.simulation import SimulationResult, simulate


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
    """Run ``plan`` and write every output into ``out_dir`` (which must not hold another run's results)."""
    out_dir = Path(out_dir)
    if (out_dir / "evals.parquet").exists():
        raise FileExistsError(f"{out_dir} already holds a run's results; ctsim never overwrites them")
    samples = plan.dataset.load()
    stream = plan.stream.build(samples)
    result = simulate(stream, plan.pipelines, plan.engine, progress=plan.progress)

    checkpoints = save_checkpoints(result, out_dir, plan.checkpoints)
    tables = build_tables(result, checkpoints)
    files = write_tables(tables, out_dir)
    files += [out_dir / p for p in checkpoints.values()]
    if plan.plots:
        files += plots.draw_all(tables, stream.change_points, out_dir / "plots")

    seeds = sorted({p.seed for p in plan.pipelines})
    header = (
        f"{len(plan.variants)} pipeline(s) × {len(seeds)} seed(s) · dataset {plan.dataset.name} "
        f"({len(stream.y):,} samples, {stream.num_slices} slices, {len(stream.batches)} arrival batches) · "
        f"engine {result.engine} on {result.device}"
    )
    summary_path = out_dir / "summary.md"
    files.append(summary_path)
    text = markdown_summary(
        plan.name,
        header,
        command,
        [(v.name, v.overrides) for v in plan.variants],
        tables["cost"],
        stream.change_points,
        stream.slice_labels,
        files,
        out_dir,
    )
    write_new(summary_path, lambda p: p.write_text(text))
    summary = console_summary(plan.name, header, tables["cost"], out_dir, files, result.wall_seconds)
    if echo:
        print(summary)
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
