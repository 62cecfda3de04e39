"""Engine benchmark: batched vs sequential training and evaluation throughput, side by side.

    python -m ctsim.bench                      # populations of 1, 8, 64 and 256 YearbookNets
    python -m ctsim.bench --models 1 8 --samples 128 --device cpu

For each population size, both engines train the same jobs (each model its own data: ``--samples``
portraits-shaped inputs, ``--epochs`` epochs, batch ``--batch``, SGD with momentum) and then predict
on ``--test`` shared test samples. It records samples/s and model-steps/s (training), samples × models
/ s (evaluation), peak memory, achieved FLOP/s (FLOPs measured with ``torch.utils.flop_counter``) and,
where the device's fp32 peak is known, the fraction of it; then writes ``results/bench/engine.csv``
and ``results/bench/engine.png``. Timings are measured after one warm-up run of each engine and
configuration. Peak memory is the CUDA allocator's peak of that measurement, or on CPU the process's
peak resident memory so far (it cannot be reset). Nothing here is a test: the numbers go to the CSV,
not into asserts.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
import torch

from ctsim.cost import flops_per_sample
from ctsim.engine.base import Engine, TrainConfig, TrainJob, job_seed
from ctsim.engine.batched import BatchedEngine
from ctsim.engine.sequential import SequentialEngine
from ctsim.models import YearbookNet
from ctsim.models.base import ModelSpec
from ctsim.optim import SGD
from ctsim.schedules import Constant

# fp32 peak (no tensor cores: TF32 stays off) in FLOP/s, by device name fragment; public data sheets.
FP32_PEAK = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12, "L4": 30.3e12, "A10": 31.2e12}


@dataclass
class Row:
    device: str
    device_name: str
    engine: str
    models: int
    phase: str  # train | eval
    seconds: float
    samples: int  # model-samples processed (models × samples × epochs for training)
    samples_per_s: float
    model_steps_per_s: float
    flops: float
    flops_per_s: float
    peak_fraction: float | None
    peak_memory_mb: float  # CUDA: peak allocated in this measurement; CPU: the process's peak RSS so far
    speedup_vs_sequential: float | None = None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _peak(name: str) -> float | None:
    return next((v for k, v in FP32_PEAK.items() if k in name), None)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # process peak RSS (Linux: KiB)


def _jobs(spec: ModelSpec, models: int, samples: int, epochs: int, batch: int, pool: int) -> list[TrainJob]:
    jobs = []
    for m in range(models):
        g = torch.Generator().manual_seed(m)
        keys = torch.randperm(pool, generator=g)[:samples]
        optimizer = SGD(lr=1e-3 * (1 + m % 4), momentum=0.9)  # per-model hyperparameters, as in a sweep
        jobs.append(
            TrainJob(
                m,
                0,
                spec,
                optimizer,
                TrainConfig(epochs=epochs, batch_size=batch),
                keys,
                job_seed(m, 0),
                schedule=Constant(),
            )
        )
    return jobs


def _timed(device: torch.device, fn) -> tuple[float, float]:
    _reset_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, _peak_memory_mb(device)


def measure(engine: Engine, spec: ModelSpec, models: int, args: argparse.Namespace) -> list[Row]:
    device = engine.device
    name = _device_name(device)
    pool = max(args.samples * 4, args.test)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(pool, *spec.input_shape, generator=g).to(device)
    y = torch.randint(spec.num_classes, (pool,), generator=g).to(device)
    jobs = _jobs(spec, models, args.samples, args.epochs, args.batch, pool)
    engine.train(jobs[: min(models, 2)], x, y)  # warm-up: allocator, kernels, autotuning
    seconds, memory = _timed(device, lambda: engine.train(jobs, x, y))
    flops = flops_per_sample(spec)
    trained = models * args.samples * args.epochs
    steps = sum(job.steps() for job in jobs)
    peak = _peak(name)
    rows = [
        Row(
            str(device),
            name,
            engine.name,
            models,
            "train",
            seconds,
            trained,
            trained / seconds,
            steps / seconds,
            trained * flops.train,
            trained * flops.train / seconds,
            None if peak is None else trained * flops.train / seconds / peak,
            memory,
        )
    ]
    states = [jobs[0].model.build(seed=m).state_dict() for m in range(models)]
    x_test = x[: args.test]
    engine.predict(spec, states[: min(models, 2)], x_test)  # warm-up
    seconds, memory = _timed(device, lambda: engine.predict(spec, states, x_test))
    evaluated = models * args.test
    rows.append(
        Row(
            str(device),
            name,
            engine.name,
            models,
            "eval",
            seconds,
            evaluated,
            evaluated / seconds,
            float("nan"),
            evaluated * flops.eval,
            evaluated * flops.eval / seconds,
            None if peak is None else evaluated * flops.eval / seconds / peak,
            memory,
        )
    )
    return rows


def run(args: argparse.Namespace) -> pl.DataFrame:
    spec = ModelSpec(partial(YearbookNet), (1, 32, 32), 2)
    engines = {
        "batched": BatchedEngine(device=args.device, eval_batch_size=args.eval_batch),
        "sequential": SequentialEngine(device=args.device, eval_batch_size=args.eval_batch),
    }
    rows: list[Row] = []
    for models in args.models:
        for name in args.engines:
            for row in measure(engines[name], spec, models, args):
                rows.append(row)
                print(
                    f"{row.engine:>10} {row.phase:>5} {row.models:>4} models: "
                    f"{row.samples_per_s:12,.0f} samples/s  {row.flops_per_s / 1e9:8.1f} GFLOP/s  "
                    f"peak mem {row.peak_memory_mb:8.0f} MB",
                    flush=True,
                )
    frame = pl.DataFrame([asdict(r) for r in rows])
    sequential = frame.filter(pl.col("engine") == "sequential").select(
        "models", "phase", pl.col("samples_per_s").alias("sequential_samples_per_s")
    )
    return (
        frame.drop("speedup_vs_sequential")
        .join(sequential, on=["models", "phase"], how="left")
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
        batched = frame.filter((pl.col("phase") == phase) & (pl.col("engine") == "batched"))
        for models, speedup, rate in batched.select(
            "models", "speedup_vs_sequential", "samples_per_s"
        ).rows():
            if speedup is not None:
                ax.annotate(
                    f"{speedup:.1f}×",
                    (models, rate),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize="small",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pl.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m ctsim.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1, 8, 64, 256], help="population sizes")
    parser.add_argument(
        "--engines", nargs="+", default=["batched", "sequential"], choices=["batched", "sequential"]
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=256, help="training samples per model")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--test", type=int, default=1024, help="shared test samples for evaluation")
    parser.add_argument(
        "--eval-batch", type=int, default=256, help="test samples per forward pass, both engines"
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    frame = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.write_csv(args.out / "engine.csv")
    plot(frame, args.out / "engine.png")
    summary = frame.filter(pl.col("engine") == "batched").select("phase", "models", "speedup_vs_sequential")
    print(summary)
    print(f"wrote {args.out / 'engine.csv'} and {args.out / 'engine.png'}")
    return frame


if __name__ == "__main__":
    main()
