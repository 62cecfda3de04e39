"""Engine benchmark: the batched engine's routes against the sequential engine, case by case.

    ctsim bench                                   # every case on the default device
    ctsim bench --cases populations --models 1 8 --device cpu --samples 128
    ctsim bench --device cuda --compile           # adds the torch.compile variant
    ctsim bench --jsonl rows.jsonl                # each row also appended there when measured
    ctsim bench --cases compile --compile-models 2 8 64   # compile seconds and speed per bucket

Cases (each writes ``results/bench/<case>.csv``; ``populations`` also ``engine.png``):

* ``populations``: 1, 8, 64 and 256 YearbookNets (``--models``), each its own data (``--samples``
  portraits-shaped inputs, ``--epochs``, batch ``--batch``, SGD with momentum and a per-model learning
  rate), trained and then evaluated on ``--test`` shared samples by the sequential engine and by the
  batched engine on each route (``vmap``: stacked; ``loop``: one model at a time), and with
  ``--compile`` its compiled variant.
* ``routes``: ``--route-models`` models of each kind (MLP, YearbookNet, CNN with dropout, LSTM, GRU,
  at their config's sizes) trained on each route and by the sequential engine: the measurement behind
  ``engine.route=auto``.
* ``launch``: tiny MLPs (one hidden layer of 8) at the same population sizes: model-steps/s, where
  per-step overhead, not arithmetic, sets the speed.
* ``small_mlps``: 32 MLPs (32-64-64-10), batch 64, Adam with a different learning rate per model, one
  ``train`` call of 50 steps: milliseconds per step, setup included, for both routes, the sequential
  engine, and per-model parameter groups in ``torch.optim`` (the approach of earlier vmap libraries).
* ``eval``: ``--eval-models`` models predicting portraits-size test data (84 slices, 3,719 samples;
  ``--eval-samples`` for another size).
* ``ragged``: populations whose data sizes differ (``--ragged-models``, default 8, 64 and 256 models,
  ``--ragged-model`` yearbooknet or mlp), sizes cycled from ``--ragged-sizes``: ``triggers``, the
  per-generation training-set sizes of the trigger study's pipelines (its committed reduced report:
  samples trained / triggers, 9 to 1,012), or ``sea_quickstart``, the decision point of the quickstart's
  variants on ``dataset=sea`` where 3 seeds of ``yearly`` (450 samples) and of ``every_5y`` (2,250) train
  together (MLP of 128, 3 epochs). Batch ``--batch``, ``--ragged-epochs`` epochs. The batched engine
  pads (``ragged=pad``, one call per step) and splits (``ragged=split``, one call per batch size) against
  the sequential engine, interleaved ``--repeats`` times; rows hold the medians, the process CPU seconds
  too (steadier than wall time on a loaded machine), and the launch audit of one more run
  (:mod:`ctsim.engine.audit`): stacked calls, aten ops and most host syncs per step.
* ``compile`` (not in the default cases: inductor takes tens of seconds to minutes per graph on a
  CPU): for each population size of ``--compile-models`` (the engine pads it to its bucket),
  ``--compile-model`` models, each its own ``--samples`` samples (cut to whole batches of ``--batch``:
  every step takes the one graph of its bucket), trained by the batched engine with ``compile=true``
  in a fresh engine (the first call compiles: ``compile_s`` is its time less a steady call's) and
  without, both on the ``vmap`` route; ``--repeats`` steady calls each, interleaved (medians). Rows
  give the graphs compiled, the steady model-steps/s and ``speedup_vs_eager``.
  ``--compile-backend eager`` traces with dynamo but runs the graphs eagerly (the tracing cost alone).

Each row records seconds, samples/s, model-steps/s, FLOPs (``torch.utils.flop_counter``) and FLOP/s,
the fraction of the device's fp32 peak where it is known, peak memory (CUDA: the allocator's peak of
that measurement; CPU: the process's peak resident memory so far), and the speed-up over the
sequential engine. Timings follow one warm-up run of each engine and configuration (for ``compile``,
the warm-up compiles; its seconds are in ``warmup_s``). Nothing here is a test: the numbers go to the
CSV files, not into asserts. Bad options (a count below 1, ``--device cuda`` without one, a
``--compile-backend`` torch does not know) are named together in one usage error before any case runs
(:func:`argument_problems`).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ctsim.engine import stack
from ctsim.engine.audit import per_step
from ctsim.engine.base import Engine, TrainConfig, TrainJob, build_model, job_seed
from ctsim.engine.batched import BatchedEngine
from ctsim.engine.optim import SGD, Adam
from ctsim.engine.plan import StepPlan, bucket
from ctsim.engine.sequential import SequentialEngine
from ctsim.measure.cost import flops_per_sample
from ctsim.models import CNN, GRU, LSTM, MLP, YearbookNet
from ctsim.models.base import ModelSpec

# fp32 peak (no tensor cores: TF32 stays off) in FLOP/s, by device name fragment; public data sheets.
FP32_PEAK = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12, "L4": 30.3e12, "A10": 31.2e12}
CASES = ("populations", "routes", "launch", "small_mlps", "eval", "ragged", "compile")
DEFAULT_CASES = CASES[:-1]  # compile: inductor takes tens of seconds to minutes per graph on a CPU
# The model kinds of the routes case, at the sizes of their configs (conf/model/), on the datasets they take.
KINDS = {
    "mlp": ModelSpec(partial(MLP, hidden=[128]), (1, 32, 32), 2),
    "yearbooknet": ModelSpec(partial(YearbookNet), (1, 32, 32), 2),
    "cnn": ModelSpec(partial(CNN), (1, 32, 32), 2),
    "lstm": ModelSpec(partial(LSTM), (24, 4), 3),
    "gru": ModelSpec(partial(GRU), (24, 4), 3),
}
PORTRAITS_TEST = 3_719  # held-out samples of the full portraits (84 slices), as evaluation sees them
_ROW_LOG: Path | None = None  # --jsonl: every row is appended there the moment it is measured


@dataclass
class Row:
    case: str
    device: str
    device_name: str
    engine: str  # sequential, batched/vmap, batched/loop, batched/vmap+compile, torch.optim param groups
    models: int
    phase: str  # train | eval
    seconds: float
    samples: int  # model-samples processed (models × samples × epochs for training)
    samples_per_s: float
    model_steps_per_s: float
    ms_per_step: float  # seconds of the whole call / optimizer steps per model (train; equal jobs here)
    flops: float
    flops_per_s: float
    peak_fraction: float | None
    peak_memory_mb: float
    warmup_s: float
    speedup_vs_sequential: float | None = None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _peak(name: str) -> float | None:
    return next((v for k, v in FP32_PEAK.items() if k in name), None)


def _timed(device: torch.device, fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds of ``fn()`` and peak memory in MB (CUDA: of this call; CPU: of the process so far)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / 2**20
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: KiB


def _jobs(spec, models, samples, epochs, batch, pool, optimizer=None) -> list[TrainJob]:
    """``models`` jobs, each its own random keys and a learning rate of its own (as in a sweep)."""
    jobs = []
    for m in range(models):
        keys = torch.randperm(pool, generator=torch.Generator().manual_seed(m))[:samples]
        opt = optimizer(m) if optimizer else SGD(lr=1e-3 * (1 + m % 4), momentum=0.9)
        jobs.append(
            TrainJob(m, 0, spec, opt, TrainConfig(epochs=epochs, batch_size=batch), keys, job_seed(m, 0))
        )
    return jobs


def _data(spec: ModelSpec, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *spec.input_shape, generator=g).to(device)
    return x, torch.randint(spec.num_classes, (n,), generator=g).to(device)


def _row(case, engine_name, device, models, phase, seconds, memory, samples, steps, flops, warmup=0.0):
    name = _device_name(device)
    peak = _peak(name)
    return Row(
        case=case,
        device=str(device),
        device_name=name,
        engine=engine_name,
        models=models,
        phase=phase,
        seconds=seconds,
        samples=samples,
        samples_per_s=samples / seconds,
        model_steps_per_s=steps / seconds if steps else float("nan"),
        ms_per_step=1e3 * seconds / max(steps // max(models, 1), 1) if steps else float("nan"),
        flops=samples * flops,
        flops_per_s=samples * flops / seconds,
        peak_fraction=None if peak is None else samples * flops / seconds / peak,
        peak_memory_mb=memory,
        warmup_s=warmup,
    )


def train_rows(case: str, name: str, engine: Engine, jobs: list[TrainJob], x, y, warm_all=False) -> Row:
    """Time one ``engine.train`` call of ``jobs`` after a warm-up (on two jobs, or all with ``warm_all``)."""
    start = time.perf_counter()
    engine.train(jobs if warm_all else jobs[:2], x, y)
    warmup = time.perf_counter() - start
    seconds, memory = _timed(engine.device, lambda: engine.train(jobs, x, y))
    samples = sum(len(j.keys) * j.train.epochs for j in jobs)
    steps = sum(j.steps() for j in jobs)
    flops = flops_per_sample(jobs[0].model).train
    return _row(case, name, engine.device, len(jobs), "train", seconds, memory, samples, steps, flops, warmup)


def eval_row(case: str, name: str, engine: Engine, spec: ModelSpec, models: int, x) -> Row:
    states = [spec.build(seed=m).state_dict() for m in range(models)]
    start = time.perf_counter()
    engine.predict(spec, states[:2], x)
    warmup = time.perf_counter() - start
    seconds, memory = _timed(engine.device, lambda: engine.predict(spec, states, x))
    flops = flops_per_sample(spec).eval
    return _row(case, name, engine.device, models, "eval", seconds, memory, models * len(x), 0, flops, warmup)


def _engines(args: argparse.Namespace, eval_batch: int) -> dict[str, Engine]:
    device = args.device
    engines: dict[str, Engine] = {
        "sequential": SequentialEngine(device=device, eval_batch_size=eval_batch),
        "batched/vmap": BatchedEngine(device=device, eval_batch_size=eval_batch, route="vmap"),
    }
    if engines["sequential"].device.type == "cpu" or args.loop:
        engines["batched/loop"] = BatchedEngine(device=device, eval_batch_size=eval_batch, route="loop")
    if args.compile:
        engines["batched/vmap+compile"] = BatchedEngine(
            device=device, eval_batch_size=eval_batch, route="vmap", compile=True
        )
    return engines


def populations(args: argparse.Namespace) -> list[Row]:
    spec = ModelSpec(partial(YearbookNet), (1, 32, 32), 2)
    engines = _engines(args, args.eval_batch)
    device = engines["sequential"].device
    x, y = _data(spec, max(args.samples * 4, args.test), device)
    rows = []
    for models in args.models:
        jobs = _jobs(spec, models, args.samples, args.epochs, args.batch, len(x))
        for name, engine in engines.items():
            rows.append(train_rows("populations", name, engine, jobs, x, y, warm_all="compile" in name))
            rows.append(eval_row("populations", name, engine, spec, models, x[: args.test]))
            _print(rows[-2:])
    return rows


def routes(args: argparse.Namespace) -> list[Row]:
    engines = _engines(args, args.eval_batch)
    engines["batched/loop"] = BatchedEngine(device=args.device, eval_batch_size=args.eval_batch, route="loop")
    rows = []
    for kind, spec in KINDS.items():
        x, y = _data(spec, args.samples * 4, engines["sequential"].device)
        jobs = _jobs(spec, args.route_models, args.samples, args.epochs, args.batch, len(x))
        for name, engine in engines.items():
            row = train_rows("routes", name, engine, jobs, x, y, warm_all="compile" in name)
            row.case = f"routes/{kind}"
            rows.append(row)
            _print(rows[-1:])
    return rows


def launch(args: argparse.Namespace) -> list[Row]:
    spec = ModelSpec(partial(MLP, hidden=[8]), (1, 8, 8), 2)
    engines = _engines(args, args.eval_batch)
    device = engines["sequential"].device
    x, y = _data(spec, 256, device)
    rows = []
    for models in args.models:
        jobs = _jobs(spec, models, 64, 5, 16, len(x))  # 20 steps of 16 samples per model
        for name, engine in engines.items():
            rows.append(train_rows("launch", name, engine, jobs, x, y, warm_all="compile" in name))
            _print(rows[-1:])
    return rows


def small_mlps(args: argparse.Namespace) -> list[Row]:
    spec = ModelSpec(partial(MLP, hidden=[64, 64]), (32,), 10)
    engines = _engines(args, args.eval_batch)
    device = engines["sequential"].device
    x, y = _data(spec, 64 * 50 * 4, device)
    jobs = _jobs(spec, 32, 64 * 50, 1, 64, len(x), optimizer=lambda m: Adam(lr=1e-3 * (1 + m / 10)))
    rows = []
    for name, engine in engines.items():
        rows.append(train_rows("small_mlps", name, engine, jobs, x, y, warm_all="compile" in name))
        _print(rows[-1:])
    rows.append(_param_groups_row(jobs, x, y, device))
    _print(rows[-1:])
    return rows


def _param_groups_row(jobs: list[TrainJob], x, y, device: torch.device) -> Row:
    """The approach of earlier vmap libraries: each model's own parameter tensors in one ``torch.optim``
    optimizer with a parameter group per model; ``vmap`` over the stack rebuilt at every step."""

    def train() -> None:
        models = [build_model(job, torch.float32).to(device) for job in jobs]
        names = [k for k, _ in models[0].named_parameters()]
        per_model = [dict(m.named_parameters()) for m in models]
        groups = [{"params": list(m.parameters()), "lr": j.optimizer.lr} for m, j in zip(models, jobs)]
        optimizer = torch.optim.Adam(groups)
        base = copy.deepcopy(models[0]).to("meta")
        losses = vmap(lambda p, xb, yb: F.cross_entropy(functional_call(base, p, (xb,)), yb))
        for calls in StepPlan(jobs, device, torch.float32).calls:
            keys = calls[0].keys
            params = {k: torch.stack([p[k] for p in per_model]) for k in names}
            optimizer.zero_grad()
            losses(params, x[keys], y[keys]).sum().backward()
            optimizer.step()

    train()
    seconds, memory = _timed(device, train)
    samples = sum(len(j.keys) for j in jobs)
    steps = sum(j.steps() for j in jobs)
    flops = flops_per_sample(jobs[0].model).train
    return _row(
        "small_mlps",
        "torch.optim param groups",
        device,
        len(jobs),
        "train",
        seconds,
        memory,
        samples,
        steps,
        flops,
    )


def evaluation(args: argparse.Namespace) -> list[Row]:
    spec = ModelSpec(partial(YearbookNet), (1, 32, 32), 2)
    engines = _engines(args, args.eval_batch)
    device = engines["sequential"].device
    x, _ = _data(spec, args.eval_samples, device)
    rows = []
    for name in ("batched/vmap", "batched/loop", "sequential"):
        if name in engines:
            rows.append(eval_row("eval", name, engines[name], spec, args.eval_models, x))
            _print(rows[-1:])
    return rows


# Per-generation training-set sizes of the trigger study (results/reference/portraits_triggers, reduced:
# samples trained / triggers of time_1, time_2, time_5, time_10, time_20, amount_500, amount_1000, never).
RAGGED_SIZES = {
    "triggers": (40, 80, 206, 412, 825, 520, 1012, 9),
    "sea_quickstart": (450, 450, 450, 2250, 2250, 2250),
}
RAGGED_MODELS = {
    "yearbooknet": ModelSpec(partial(YearbookNet), (1, 32, 32), 2),
    "mlp": ModelSpec(partial(MLP, hidden=[128]), (3,), 2),  # the sea quickstart's model
}


def _ragged_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ragged-models", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--ragged-model", default="yearbooknet", choices=list(RAGGED_MODELS))
    parser.add_argument("--ragged-sizes", default="triggers", choices=list(RAGGED_SIZES))
    parser.add_argument("--ragged-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved timings per engine (medians)")


def ragged_jobs(spec: ModelSpec, models: int, sizes: Sequence[int], epochs: int, batch: int, pool: int):
    """``models`` jobs with data sizes cycled from ``sizes``, SGD with momentum, a learning rate each."""
    jobs = []
    for m in range(models):
        keys = torch.randperm(pool, generator=torch.Generator().manual_seed(m))[: sizes[m % len(sizes)]]
        opt = SGD(lr=1e-3 * (1 + m % 4), momentum=0.9)
        jobs.append(
            TrainJob(m, 0, spec, opt, TrainConfig(epochs=epochs, batch_size=batch), keys, job_seed(m, 0))
        )
    return jobs


def ragged(args: argparse.Namespace) -> list[dict]:
    """The ``ragged`` case (see the module docstring)."""
    spec = RAGGED_MODELS[args.ragged_model]
    sizes = RAGGED_SIZES[args.ragged_sizes]
    engines: dict[str, Engine] = {
        "sequential": SequentialEngine(device=args.device),
        "batched/vmap pad": BatchedEngine(device=args.device, route="vmap", ragged="pad"),
        "batched/vmap split": BatchedEngine(device=args.device, route="vmap", ragged="split"),
    }
    device = engines["sequential"].device
    x, y = _data(spec, max(sizes) * 2, device)
    rows = []
    for models in args.ragged_models:
        jobs = ragged_jobs(spec, models, sizes, args.ragged_epochs, args.batch, len(x))
        for engine in engines.values():
            engine.train(jobs[:2], x, y)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                cpu = time.process_time()
                seconds, memory = _timed(device, lambda e=engine, j=jobs: e.train(j, x, y))
                times[name].append((seconds, time.process_time() - cpu))
        for name, engine in engines.items():
            wall = statistics.median(t for t, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            audit = per_step(engine, jobs, x, y) if isinstance(engine, BatchedEngine) else None
            samples = sum(len(j.keys) * j.train.epochs for j in jobs)
            steps = sum(j.steps() for j in jobs)
            row = _row("ragged", name, device, models, "train", wall, memory, samples, steps, 0.0)
            rows.append(
                {
                    **asdict(row),
                    "sizes": args.ragged_sizes,
                    "model_kind": args.ragged_model,
                    "repeats": args.repeats,
                    "cpu_seconds": cpu,
                    "group_steps": max(j.steps() for j in jobs),
                    "calls_per_step": None if audit is None else audit.calls,
                    "ops_per_step": None if audit is None else audit.ops,
                    "max_syncs_per_step": None if audit is None else audit.max_syncs,
                }
            )
            print(
                f"ragged {args.ragged_model} {models:>4} models {name:>20}: {wall:8.3f} s (cpu {cpu:8.3f} s) "
                f"{row.model_steps_per_s:10,.0f} model-steps/s"
                + ("" if audit is None else f" {audit.calls:.2f} calls/step {audit.ops:.0f} ops/step"),
                flush=True,
            )
    return rows


def _compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile-models", type=int, nargs="+", default=[1, 8, 64], help="compile case sizes"
    )
    parser.add_argument("--compile-model", default="yearbooknet", choices=list(RAGGED_MODELS))
    parser.add_argument(
        "--compile-backend", default="inductor", help="its torch.compile backend; eager: trace only"
    )


def compiled(args: argparse.Namespace) -> list[dict]:
    """The ``compile`` case (see the module docstring)."""
    spec = RAGGED_MODELS[args.compile_model]
    samples = max(args.batch, args.samples // args.batch * args.batch)  # whole batches: one graph a bucket
    x, y = _data(spec, samples * 4, BatchedEngine(device=args.device).device)
    rows = []
    backend, stack.COMPILE_BACKEND = stack.COMPILE_BACKEND, args.compile_backend
    try:
        for models in args.compile_models:
            rows += _compile_rows(
                args, spec, _jobs(spec, models, samples, args.epochs, args.batch, len(x)), x, y
            )
    finally:
        stack.COMPILE_BACKEND = backend
    return rows


def _compile_rows(args: argparse.Namespace, spec: ModelSpec, jobs: list[TrainJob], x, y) -> list[dict]:
    """One population trained by fresh engines with and without ``compile``: a first call, then
    ``--repeats`` steady calls each, interleaved."""
    engines = {
        "batched/vmap": BatchedEngine(device=args.device, route="vmap"),
        "batched/vmap+compile": BatchedEngine(device=args.device, route="vmap", compile=True),
    }
    device, models = x.device, len(jobs)
    first = {name: _timed(device, partial(e.train, jobs, x, y))[0] for name, e in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    memory = dict.fromkeys(engines, 0.0)
    for _ in range(args.repeats):
        for name, engine in engines.items():
            seconds, memory[name] = _timed(device, partial(engine.train, jobs, x, y))
            times[name].append(seconds)
    steps = sum(j.steps() for j in jobs)
    samples = sum(len(j.keys) * j.train.epochs for j in jobs)
    flops = flops_per_sample(spec).train
    eager = statistics.median(times["batched/vmap"])
    rows = []
    for name, engine in engines.items():
        wall = statistics.median(times[name])
        row = _row("compile", name, device, models, "train", wall, memory[name], samples, steps, flops)
        row.warmup_s = first[name]
        rows.append(
            {
                **asdict(row),
                "model_kind": args.compile_model,
                "backend": args.compile_backend if engine.compile else None,
                "bucket": max(2, bucket(models)) if models > 1 else 1,
                "batch": args.batch,
                "graphs": len(engine.graphs),
                "compile_s": max(first[name] - wall, 0.0) if engine.compile else 0.0,
                "repeats": args.repeats,
                "speedup_vs_eager": eager / wall,
            }
        )
        print(
            f"compile {args.compile_model} {models:>4} models {name:>20}: "
            f"first call {first[name]:8.2f} s, steady {wall:8.3f} s "
            f"{row.model_steps_per_s:10,.0f} model-steps/s, "
            f"{len(engine.graphs)} graphs, {eager / wall:5.2f}x eager",
            flush=True,
        )
    return rows


def _print(rows: list[Row]) -> None:
    for r in rows:
        print(
            f"{r.case:>11} {r.engine:>24} {r.phase:>5} {r.models:>4} models: {r.seconds:8.3f} s "
            f"{r.samples_per_s:12,.0f} samples/s {r.flops_per_s / 1e9:8.1f} GFLOP/s "
            + (f"{r.ms_per_step:7.2f} ms/step " if r.phase == "train" else "")
            + ("" if r.peak_fraction is None else f"{100 * r.peak_fraction:5.1f}% of fp32 peak"),
            flush=True,
        )
        if _ROW_LOG is not None:
            with _ROW_LOG.open("a") as f:
                f.write(json.dumps(asdict(r)) + "\n")


def with_speedups(frame: pl.DataFrame) -> pl.DataFrame:
    """The speed-up of every row over the sequential engine's row of the same case, size and phase."""
    sequential = frame.filter(pl.col("engine") == "sequential").select(
        "case", "models", "phase", pl.col("samples_per_s").alias("sequential_samples_per_s")
    )
    return (
        frame.drop("speedup_vs_sequential")
        .join(sequential, on=["case", "models", "phase"], how="left")
        .with_columns(
            (pl.col("samples_per_s") / pl.col("sequential_samples_per_s")).alias("speedup_vs_sequential")
        )
        .drop("sequential_samples_per_s")
    )


def plot(frame: pl.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, phase in zip(axes, ("train", "eval")):
        data = frame.filter(pl.col("phase") == phase).to_dict(as_series=False)
        sns.lineplot(data=data, x="models", y="samples_per_s", hue="engine", marker="o", ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("models in the population")
        ax.set_ylabel("model-samples per second")
        ax.set_title(f"{phase} throughput on {frame['device_name'][0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The options that count something: each must be an integer ≥ 1 (a list of them for nargs="+").
COUNTS = (
    "models",
    "samples",
    "epochs",
    "batch",
    "test",
    "eval_batch",
    "eval_models",
    "eval_samples",
    "route_models",
    "ragged_models",
    "ragged_epochs",
    "repeats",
    "compile_models",
)


def argument_problems(args: argparse.Namespace) -> list[str]:
    """Every bad option, one line each, naming the option, the value and what it takes.

    >>> argument_problems(argparse.Namespace(models=[1, 0], repeats=-2, device="cpu", cases=["launch"]))
    ['argument --models: expected integers ≥ 1, got 0', 'argument --repeats: expected an integer ≥ 1, got -2']
    """
    problems = [p for name in COUNTS if (p := _count_problem(name, getattr(args, name, None)))]
    if args.device == "cuda" and not torch.cuda.is_available():
        problems.append("argument --device: cuda, but this machine has no CUDA device; use cpu or auto")
    if (getattr(args, "compile", False) or "compile" in args.cases) and not stack.compile_bounded():
        problems.append(
            f"argument --compile (and --cases compile): torch {torch.__version__}'s torch.compile cannot "
            "bound its graphs (recompile_limit, isolate_recompiles), so the engine refuses compile=true"
        )
    if "compile" in args.cases:
        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.compile_backend not in backends:
            near = difflib.get_close_matches(args.compile_backend, backends, 1)
            problems.append(
                f"argument --compile-backend: {args.compile_backend!r} is not a torch.compile backend"
                + (f"; did you mean {near[0]!r}?" if near else "")
                + " (inductor compiles, eager only traces; torch._dynamo.list_backends(exclude_tags=()))"
            )
    return problems


def _count_problem(name: str, value: int | list[int] | None) -> str | None:
    """An option that counts something (samples, models, repeats) takes integers ≥ 1."""
    values = value if isinstance(value, list) else [] if value is None else [value]
    bad = [v for v in values if v < 1]
    if not bad:
        return None
    what = "integers ≥ 1" if isinstance(value, list) else "an integer ≥ 1"
    return f"argument --{name.replace('_', '-')}: expected {what}, got {', '.join(map(str, bad))}"


def main(argv: list[str] | None = None) -> dict[str, pl.DataFrame]:
    parser = argparse.ArgumentParser(prog="ctsim bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=CASES)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 8, 64, 256], help="population sizes")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=256, help="training samples per model")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--test", type=int, default=1024, help="shared test samples for evaluation")
    parser.add_argument("--eval-batch", type=int, default=64, help="test samples per forward pass")
    parser.add_argument(
        "--eval-models", type=int, default=None, help="models of the eval case (1000 on CUDA, 16 on CPU)"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=PORTRAITS_TEST, help="samples of the eval case (portraits: 3719)"
    )
    parser.add_argument("--route-models", type=int, default=16, help="models per kind in the routes case")
    parser.add_argument("--compile", action="store_true", help="add the batched engine with compile=true")
    parser.add_argument("--loop", action="store_true", help="add the loop route on CUDA too (always on CPU)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--jsonl", type=Path, help="also append each row to this file as a JSON line when it is measured"
    )
    _ragged_arguments(parser)
    _compile_arguments(parser)
    args = parser.parse_args(argv)
    problems = argument_problems(args)
    if problems:  # before any case runs or anything is written
        parser.error("\n  ".join(problems))
    global _ROW_LOG
    _ROW_LOG = args.jsonl
    if args.eval_models is None:
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        args.eval_models = 1000 if cuda else 16
    args.out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for case in args.cases:
        run = {"populations": populations, "routes": routes, "launch": launch, "small_mlps": small_mlps}
        run["ragged"], run["compile"] = ragged, compiled
        rows = run.get(case, evaluation)(args)
        frame = with_speedups(pl.DataFrame([r if isinstance(r, dict) else asdict(r) for r in rows]))
        frame.write_csv(args.out / f"{case}.csv")
        frames[case] = frame
        if case == "populations":
            plot(frame, args.out / "engine.png")
        print(f"wrote {args.out / f'{case}.csv'}")
    return frames


if __name__ == "__main__":
    main()
