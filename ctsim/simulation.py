"""The simulation loop: replay the stream through every pipeline, train what is due, evaluate.

Read :func:`simulate` top to bottom: for each arrival batch, each pipeline's trigger decides; each
pipeline that fires selects its training set; every job of that decision point goes to the engine in
one call; the trained generations are recorded. After the replay, every generation is evaluated on
every slice's test set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ctsim.engine.base import Engine, State, TrainConfig, Trained, TrainJob, job_seed
from ctsim.evaluation import Evaluation, evaluate
from ctsim.models.base import ModelSpec
from ctsim.optim import SGD, Adam
from ctsim.progress import bar, replay_status
from ctsim.schedules import Schedule
from ctsim.selection.base import Selection, SelectionContext, SelectionPolicy
from ctsim.stream import ArrivalBatch, Stream
from ctsim.triggers.base import Trigger, TriggerContext

PHASES = ("trigger", "selection", "train", "eval")


@dataclass(frozen=True)
class Pipeline:
    """Trigger + selection + training + model + seed. ``name`` is the variant it comes from."""

    name: str
    seed: int
    trigger: Trigger
    selection: SelectionPolicy
    model: ModelSpec
    optimizer: SGD | Adam
    train: TrainConfig
    schedule: Schedule


@dataclass(frozen=True)
class Generation:
    """One trained model of one pipeline, with where it came from."""

    pipeline: int
    index: int
    parent: int | None
    batch: ArrivalBatch
    time: float
    reason: str
    selection: Selection
    trained: Trained

    @property
    def slice(self) -> int:
        """The slice in which its training data ended (it serves the slices after it)."""
        return self.batch.slice


@dataclass
class _PipelineState:
    """What the loop remembers per pipeline between batches."""

    generator: torch.Generator
    interval_start: int = 0
    intervals: list[torch.Tensor] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @property
    def latest_state(self) -> State | None:
        return self.generations[-1].trained.state if self.generations else None


@dataclass(frozen=True)
class SimulationResult:
    """Everything a run produced; :mod:`ctsim.registry` turns it into tables."""

    stream: Stream
    pipelines: list[Pipeline]
    generations: list[Generation]  # in training order
    evaluation: Evaluation  # rows aligned with ``generations``
    seconds: list[dict[str, float]]  # per pipeline and phase
    engine: str
    device: str
    wall_seconds: float


def simulate(
    stream: Stream, pipelines: Sequence[Pipeline], engine: Engine, progress: bool = True
) -> SimulationResult:
    """Replay ``stream`` through ``pipelines``, training every due generation on ``engine``."""
    start = time.perf_counter()
    x, y = stream.x.to(engine.device), stream.y.to(engine.device)  # data lives on the device
    states = [_PipelineState(torch.Generator().manual_seed(p.seed)) for p in pipelines]
    generations: list[Generation] = []
    order = stream.arrival_order

    trained_samples, train_seconds = 0, 0.0  # so far, for the bar's throughput
    status = replay_status(len(pipelines), generations=0, samples=0, seconds=0.0)
    replay = bar(stream.batches, enabled=progress, desc="replay", postfix=status)
    for batch in replay:
        due: list[tuple[int, str, Selection]] = []
        for i, (pipeline, state) in enumerate(zip(pipelines, states)):
            since = order[state.interval_start : batch.stop]
            seen = order[: batch.stop]
            tick = time.perf_counter()
            reason = pipeline.trigger.observe(TriggerContext(batch, seen, since, len(state.generations)))
            state.seconds["trigger"] += time.perf_counter() - tick
            if reason is None:
                continue
            tick = time.perf_counter()
            ctx = SelectionContext(seen, since, tuple(state.intervals), state.generator)
            selection = pipeline.selection.select(ctx)
            state.seconds["selection"] += time.perf_counter() - tick
            state.intervals.append(since)
            state.interval_start = batch.stop
            due.append((i, reason, selection))
        if not due:
            continue

        jobs = [_job(i, pipelines[i], states[i], selection) for i, _, selection in due]
        status = replay_status(len(pipelines), len(generations), trained_samples, train_seconds, len(jobs))
        replay.set_postfix_str(status)  # shown now: a decision point can train for long
        for job, trained, (i, reason, selection) in zip(jobs, engine.train(jobs, x, y), due):
            state = states[i]
            parent = state.generations[-1].index if job.parent is not None else None
            last_time = float(stream.time[batch.keys[-1]])
            gen = Generation(i, len(state.generations), parent, batch, last_time, reason, selection, trained)
            state.generations.append(gen)
            state.seconds["train"] += trained.seconds
            generations.append(gen)
            trained_samples += trained.samples
            train_seconds += trained.seconds
        status = replay_status(len(pipelines), len(generations), trained_samples, train_seconds)
        replay.set_postfix_str(status)

    evaluation = evaluate(
        engine,
        stream,
        [pipelines[g.pipeline].model for g in generations],
        [g.trained.state for g in generations],
        progress=progress,
    )
    for gen, seconds in zip(generations, evaluation.seconds.tolist()):
        states[gen.pipeline].seconds["eval"] += seconds
    return SimulationResult(
        stream=stream,
        pipelines=list(pipelines),
        generations=generations,
        evaluation=evaluation,
        seconds=[s.seconds for s in states],
        engine=engine.name,
        device=str(engine.device),
        wall_seconds=time.perf_counter() - start,
    )


def _job(index: int, pipeline: Pipeline, state: _PipelineState, selection: Selection) -> TrainJob:
    generation = len(state.generations)
    parent = state.latest_state if pipeline.train.init == "finetune" else None
    return TrainJob(
        pipeline=index,
        generation=generation,
        model=pipeline.model,
        optimizer=pipeline.optimizer,
        train=pipeline.train,
        keys=selection.keys,
        seed=job_seed(pipeline.seed, generation),
        parent=parent,
        weights=selection.weights,
        schedule=pipeline.schedule,
    )
