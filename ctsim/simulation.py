"""The simulation loop: replay the stream through every pipeline, train what is due, evaluate.

Read :func:`simulate` top to bottom: for each arrival batch, each pipeline's trigger decides; each
pipeline that fires selects its training set (presampling, then an optional score-based downsampling,
scored for all pipelines in one engine call); every job of that decision point goes to the engine in
one call; the trained generations are recorded. After the replay, every generation is evaluated on
every slice's test set.

**Identical work is done once.** Pipelines of one seed often make the same training job: the same
parent, the same samples, seed and settings (drift triggers that have not fired yet, or that fired at
the same batches, all hold one model). Each job gets a fingerprint (:func:`fingerprint`: its
parent's fingerprint, its keys and weights, its seed, its model, optimizer, schedule and training
settings); at a decision point, jobs with equal fingerprints are trained once and their pipelines
share the trained model (each pipeline's ``train`` seconds are still its job's, as if it trained
alone). Model signals are asked per distinct (model fingerprint, rows): pipelines whose active models
share a fingerprint share one pass. ``simulate(..., share=False)`` trains and embeds per pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from ctsim.engine.base import Engine, State, TrainConfig, Trained, TrainJob, digest, job_seed
from ctsim.engine.optim import SGD, Adam
from ctsim.engine.schedules import Schedule
from ctsim.engine.scores import head_bias
from ctsim.measure.cost import flops_per_sample
from ctsim.measure.evaluation import Evaluation, Metrics, evaluate
from ctsim.models.base import ModelSpec
from ctsim.progress import bar, replay_status
from ctsim.selection.base import (
    Selection,
    SelectionContext,
    SelectionPolicy,
    first_selection_problems,
    select,
)
from ctsim.stream import ArrivalBatch, Stream
from ctsim.triggers.base import Trained as TriggerTrained
from ctsim.triggers.base import (
    Trigger,
    TriggerContext,
    Want,
    decide,
    first_decision_problems,
    gather,
    problems_of,
    wants_of,
)
from ctsim.validation import ConfigError, Problem

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
    # the generations, as triggers see them
    seen_by_trigger: list[TriggerTrained] = field(default_factory=list)
    fingerprints: list[str | None] = field(default_factory=list)  # each generation's job (None: not shared)

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
    skipped: list[Skipped] = field(default_factory=list)  # triggers whose selection was empty


@dataclass(frozen=True)
class Skipped:
    """A trigger that trained nothing: its selection was empty. The active model stays."""

    pipeline: int
    batch: ArrivalBatch
    time: float
    reason: str  # the trigger's
    why: str


class Recorder(Protocol):
    """Where a run's results go as they are made (:class:`ctsim.registry.store.RunStore`), and what an
    earlier attempt of the same run saved: a resumed replay loads those instead of training them."""

    def saved(self, pipeline: int, generation: int, keys: torch.Tensor) -> Trained | None: ...

    def record(self, gens: Sequence[Generation]) -> None: ...

    def saved_evaluation(self, gens: Sequence[Generation]) -> tuple[Metrics, torch.Tensor] | None: ...

    def record_evaluation(
        self, gens: Sequence[Generation], metrics: Metrics, n: torch.Tensor, seconds: torch.Tensor
    ) -> None: ...


class NoRecorder:
    """Keeps nothing: a replay held in memory only."""

    def saved(self, pipeline: int, generation: int, keys: torch.Tensor) -> Trained | None:
        return None

    def record(self, gens: Sequence[Generation]) -> None:
        pass

    def saved_evaluation(self, gens: Sequence[Generation]) -> None:
        return None

    def record_evaluation(self, gens, metrics, n, seconds) -> None:
        pass


def simulate(
    stream: Stream,
    pipelines: Sequence[Pipeline],
    engine: Engine,
    progress: bool = True,
    recorder: Recorder | None = None,
    eval_chunk: int | None = None,
    share: bool = True,
) -> SimulationResult:
    """Replay ``stream`` through ``pipelines``, training every due generation on ``engine``.

    Each decision point's generations go to ``recorder`` as soon as they are trained, and evaluations
    as each chunk of ``eval_chunk`` generations is done. A generation the recorder already saved (a
    resumed run) is loaded, not trained: the replay is deterministic, so it makes the same decisions.
    ``share``: identical training jobs are trained once and identical signal passes made once (see
    the module docstring); False does every pipeline's work separately.
    """
    recorder = recorder or NoRecorder()
    ConfigError.raise_all(stream_problems(stream, pipelines))  # before any work
    start = time.perf_counter()
    x, y = stream.x.to(engine.device), stream.y.to(engine.device)  # data lives on the device
    states = [_PipelineState(torch.Generator().manual_seed(p.seed)) for p in pipelines]
    generations: list[Generation] = []
    skipped: list[Skipped] = []

    trained_samples, train_seconds = 0, 0.0  # so far, for the bar's throughput
    status = replay_status(len(pipelines), generations=0, samples=0, seconds=0.0)
    replay = bar(stream.batches, enabled=progress, desc="replay", postfix=status)
    for batch in replay:
        # 1. every trigger says which model signals it wants; one engine call answers them all
        contexts = [_context(batch, stream, x, y, p, st) for p, st in zip(pipelines, states)]
        wants = [wants_of(p.trigger, ctx) for p, ctx in zip(pipelines, contexts)]
        if any(wants):
            tick = time.perf_counter()
            asks = [(p.model, st.latest_state, w) for p, st, w in zip(pipelines, states, wants)]
            models = [st.fingerprints[-1] if share and st.fingerprints else None for st in states]
            answers = gather(engine, asks, x, y, models=models)
            each = (time.perf_counter() - tick) / sum(bool(w) for w in wants)
            for st, w in zip(states, wants):
                st.seconds["trigger"] += each if w else 0.0
            contexts = [replace(ctx, signals=a) for ctx, a in zip(contexts, answers)]
        # 2. the triggers decide (drift triggers together: their MMD tests in one batched call);
        #    each pipeline that fires selects its training set
        reasons, seconds = decide([p.trigger for p in pipelines], contexts)
        due: list[tuple[int, str, Selection]] = []
        for i, (pipeline, state, ctx, reason) in enumerate(zip(pipelines, states, contexts, reasons)):
            state.seconds["trigger"] += seconds[i]
            if reason is None:
                continue
            tick = time.perf_counter()
            since = ctx.since_trigger
            sel_ctx = SelectionContext(ctx.seen, since, tuple(state.intervals), state.generator, stream)
            selection = select(pipeline.selection, sel_ctx)  # checked: keys seen, each once
            state.seconds["selection"] += time.perf_counter() - tick
            state.intervals.append(since)
            state.interval_start = batch.stop
            due.append((i, reason, selection))
        # 3. downsampling by score: one engine call scores every due pipeline's candidates
        due = _downsample(engine, stream, x, y, pipelines, states, due)
        for i, reason, _ in [d for d in due if not len(d[2].keys)]:  # never reaches the engine
            why = f"the selection ({type(pipelines[i].selection).__name__}) chose no samples"
            skipped.append(Skipped(i, batch, float(stream.time[batch.keys[-1]]), reason, why))
        due = [d for d in due if len(d[2].keys)]
        if not due:
            continue

        jobs = [_job(i, pipelines[i], states[i], selection) for i, _, selection in due]
        prints = [  # None: not shared, so no job needs a name
            fingerprint(j, _parent_print(pipelines[j.pipeline], states[j.pipeline])) if share else None
            for j in jobs
        ]
        status = replay_status(len(pipelines), len(generations), trained_samples, train_seconds, len(jobs))
        replay.set_postfix_str(status)  # shown now: a decision point can train for long
        made, (results, fresh) = [], _train(engine, recorder, jobs, x, y, prints if share else None)
        for job, print_, trained, (i, reason, selection) in zip(jobs, prints, results, due):
            state = states[i]
            parent = state.generations[-1].index if job.parent is not None else None
            last_time = float(stream.time[batch.keys[-1]])
            gen = Generation(i, len(state.generations), parent, batch, last_time, reason, selection, trained)
            state.generations.append(gen)
            state.fingerprints.append(print_)
            state.seen_by_trigger.append(_seen_by_trigger(gen, pipelines[i], len(state.intervals[-1])))
            state.seconds["train"] += trained.seconds
            generations.append(gen)
            made.append(gen)
            trained_samples += trained.samples
            train_seconds += trained.seconds
        if fresh:
            recorder.record(made)
        status = replay_status(len(pipelines), len(generations), trained_samples, train_seconds)
        replay.set_postfix_str(status)

    evaluation = evaluate(
        engine,
        stream,
        [pipelines[g.pipeline].model for g in generations],
        [g.trained.state for g in generations],
        progress=progress,
        chunk=eval_chunk,
        saved=lambda rows: recorder.saved_evaluation([generations[r] for r in rows]),
        record=lambda rows, metrics, n, secs: recorder.record_evaluation(
            [generations[r] for r in rows], metrics, n, secs
        ),
    )
    for gen, seconds in zip(generations, evaluation.seconds.tolist()):
        states[gen.pipeline].seconds["eval"] += seconds
    return SimulationResult(
        stream=stream,
        pipelines=list(pipelines),
        generations=generations,
        evaluation=evaluation,
        seconds=[s.seconds for s in states],
        skipped=skipped,
        engine=engine.name,
        device=str(engine.device),
        wall_seconds=time.perf_counter() - start,
    )


def _train(
    engine: Engine,
    recorder: Recorder,
    jobs: list[TrainJob],
    x: torch.Tensor,
    y: torch.Tensor,
    prints: list[str] | None = None,
) -> tuple[list[Trained], bool]:
    """The decision point's generations, and whether any was trained (else all were loaded).

    They are loaded when an earlier attempt saved them all. Otherwise all are trained in one engine
    call, the call an uninterrupted run made, and the saved ones are kept as they were. With
    ``prints`` (the jobs' fingerprints), jobs of equal fingerprints are trained once, and share it.
    """
    saved = [recorder.saved(j.pipeline, j.generation, j.keys) for j in jobs]
    if all(s is not None for s in saved):
        return saved, False  # type: ignore[return-value]
    same = prints if prints is not None else list(range(len(jobs)))  # jobs of equal entries train once
    first: dict = {}
    for j, key in enumerate(same):
        first.setdefault(key, j)
    trained = dict(zip(first, engine.train([jobs[j] for j in first.values()], x, y)))
    return [s if s is not None else trained[key] for s, key in zip(saved, same)], True


def fingerprint(job: TrainJob, parent: str | None) -> str:
    """What makes a job's trained model: equal fingerprints, the same model (``parent`` is the
    fingerprint of the generation it fine-tunes, None for a fresh initialisation). The pipeline's
    index and the generation's number are left out: two pipelines' jobs may be the same job.

    >>> from ctsim.engine.base import TrainConfig
    >>> job = TrainJob(0, 1, None, None, TrainConfig(), torch.arange(5), seed=7)
    >>> fingerprint(job, "a") == fingerprint(replace(job, pipeline=3), "a") != fingerprint(job, "b")
    True
    >>> fingerprint(job, "a") != fingerprint(replace(job, keys=torch.arange(4)), "a")
    True
    """
    model = None if job.model is None else job.model.key
    settings = (model, job.optimizer, job.train, job.schedule, job.batch_then_sample, job.epoch_subset)
    return digest(job.keys, job.weights, head=repr((settings, job.seed, parent, job.parent is None)))


def _parent_print(pipeline: Pipeline, state: _PipelineState) -> str | None:
    """The fingerprint of the generation a new job of ``pipeline`` starts from (None: a fresh one)."""
    if pipeline.train.init == "finetune" and state.fingerprints:
        return state.fingerprints[-1]
    return None


def stream_problems(stream: Stream, pipelines: Sequence[Pipeline]) -> list[Problem]:
    """What in the pipelines' triggers this stream cannot serve (e.g. a window larger than the stream),
    and what their policies return on its first arrival batch that breaks their contracts."""
    found: list[Problem] = []
    for p in pipelines:
        own = [replace(q, key=f"trigger.{q.key}") for q in problems_of(p.trigger, stream)]
        own += first_decision_problems(p.trigger, stream, p.seed)
        own += first_selection_problems(p.selection, stream, p.seed)
        for problem in own:
            problem = replace(problem, key=f"{p.name}:{problem.key}")
            if problem not in found:
                found.append(problem)
    return found


def _context(
    batch: ArrivalBatch, stream: Stream, x: torch.Tensor, y: torch.Tensor, p: Pipeline, st: _PipelineState
) -> TriggerContext:
    order = stream.arrival_order
    since, seen = order[st.interval_start : batch.stop], order[: batch.stop]
    gens = tuple(st.seen_by_trigger)
    return TriggerContext(batch, seen, since, len(gens), stream, x, y, gens, p.seed)


def _seen_by_trigger(gen: Generation, pipeline: Pipeline, new_samples: int) -> TriggerTrained:
    samples = gen.trained.samples
    flops = samples * flops_per_sample(pipeline.model).train
    return TriggerTrained(gen.index, gen.selection.keys, new_samples, samples, flops, gen.trained.seconds)


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
        batch_then_sample=selection.batch_then_sample,
        epoch_subset=selection.epoch_subset,
    )


def _downsample(
    engine: Engine,
    stream: Stream,
    x: torch.Tensor,
    y: torch.Tensor,
    pipelines: Sequence[Pipeline],
    states: Sequence[_PipelineState],
    due: list[tuple[int, str, Selection]],
) -> list[tuple[int, str, Selection]]:
    """Apply each due pipeline's downsampler (if any) to its presampled candidates.

    Sample-then-batch scorers want signals of the model about to be trained on their candidates; they
    are gathered for all pipelines in one engine call (:func:`~ctsim.triggers.base.gather`), and
    candidate sets of equal keys share one pass. The call's seconds are shared evenly by the
    pipelines that asked, in their ``selection`` phase.
    """
    downs = [getattr(pipelines[i].selection, "downsample", None) for i, _, _ in due]
    if not any(downs):
        return due
    tick = time.perf_counter()
    asks, distinct = [], []
    for (i, _, selection), down in zip(due, downs):
        needs = down.needs() if down is not None and len(selection.keys) else frozenset()
        if not needs:
            asks.append((pipelines[i].model, None, {}))
            continue
        keys = next((dev for cpu, dev in distinct if torch.equal(cpu, selection.keys)), None)
        if keys is None:  # equal candidate sets share one keys object, so one pass serves them
            keys = selection.keys.to(engine.device)
            distinct.append((selection.keys, keys))
        state = _scoring_state(pipelines[i], states[i], engine)
        asks.append((pipelines[i].model, state, {"scores": Want(keys, needs)}))
    answers = gather(engine, asks, x, y) if distinct else [{} for _ in asks]
    share = (time.perf_counter() - tick) / max(1, sum(bool(a[2]) for a in asks))
    out = []
    for (i, reason, selection), down, ask, answer in zip(due, downs, asks, answers):
        if down is None:
            out.append((i, reason, selection))
            continue
        tick = time.perf_counter()
        bias = _head_has_bias(pipelines[i].model)
        signals = answer.get("scores")
        chosen = down.apply(selection, signals, stream.y[selection.keys], states[i].generator, bias)
        states[i].seconds["selection"] += time.perf_counter() - tick + (share if ask[2] else 0.0)
        out.append((i, reason, chosen))
    return out


def _scoring_state(pipeline: Pipeline, state: _PipelineState, engine: Engine) -> State:
    """The state training will start from: the active model when fine-tuning, else the fresh one."""
    if pipeline.train.init == "finetune" and state.latest_state is not None:
        return state.latest_state
    seed = job_seed(pipeline.seed, len(state.generations))
    return pipeline.model.build(seed=seed, dtype=engine.dtype).state_dict()


def _head_has_bias(model: ModelSpec) -> bool:
    if model.key not in _BIAS:
        _BIAS[model.key] = head_bias(model.build())
    return _BIAS[model.key]


_BIAS: dict[str, bool] = {}
