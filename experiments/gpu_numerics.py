"""The GPU contract, measured: batched against sequential on one CUDA device, per model kind and steps.

    python experiments/gpu_numerics.py [--out results/bench] [--device cpu]

For each model kind of the equivalence tests, the jobs of ``tests/test_engine_equivalence.py`` (four
jobs of 100-160 steps, and the same jobs with 4× the epochs) are trained by both engines on CUDA:
float32 at realistic step sizes, float64 at large ones. It records the largest difference relative to
each tensor's largest value (float32) or absolute (float64), and, per kind, the memory a stacked
call of 16 models really took against the engine's estimate (``ctsim.engine.memory``). Writes
``cuda_numerics.csv`` and ``gpu_memory.csv``; the README's GPU contract and the test tolerances are to
come from these figures. ``--device cpu`` measures the differences on the CPU (``cpu_numerics.csv``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.engine.memory import per_model_bytes
from tests.test_engine_equivalence import KINDS, SGDS, SGDS_F32, _data, _jobs


def difference(kind: str, dtype: str, epochs_factor: int, device: str = "cuda") -> dict:
    spec = KINDS[kind]
    x, y = _data(spec)
    x, y = x.to(device, torch.float32 if dtype == "float32" else torch.float64), y.to(device)
    jobs = _jobs(spec, SGDS_F32 if dtype == "float32" else SGDS)
    jobs = [
        dataclasses.replace(j, train=dataclasses.replace(j.train, epochs=j.train.epochs * epochs_factor))
        for j in jobs
    ]
    seq = SequentialEngine(device=device, dtype=dtype).train(jobs, x, y)
    bat = BatchedEngine(device=device, dtype=dtype).train(jobs, x, y)
    worst = 0.0
    for s, b in zip(seq, bat):
        for k, v in s.state.items():
            if v.is_floating_point():
                diff = (b.state[k] - v).abs().max().item()
                worst = max(worst, diff / (v.abs().max().item() or 1.0) if dtype == "float32" else diff)
    return {
        "device": device,
        "kind": kind,
        "dtype": dtype,
        "steps_min": min(j.steps() for j in jobs),
        "steps_max": max(j.steps() for j in jobs),
        "difference": worst,
        "relative": dtype == "float32",
    }


def memory(kind: str, models: int = 16, batch: int = 64) -> dict:
    spec = KINDS[kind]
    x, y = _data(spec, n=2000)
    x, y = x.float().cuda(), y.cuda()
    jobs = [
        dataclasses.replace(j, train=dataclasses.replace(j.train, batch_size=batch, epochs=1))
        for j in _jobs(spec, SGDS_F32)
    ]
    jobs = [dataclasses.replace(jobs[m % 4], pipeline=m) for m in range(models)]
    engine = BatchedEngine(device="cuda", route="vmap")
    engine.train(jobs[:2], x, y)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    engine.train(jobs, x, y)
    torch.cuda.synchronize()
    measured = (torch.cuda.max_memory_allocated() - base) / models
    estimate = per_model_bytes(spec, torch.float32, batch, training=True)
    return {
        "kind": kind,
        "models": models,
        "batch": batch,
        "measured_bytes_per_model": measured,
        "estimated_bytes_per_model": estimate,
        "estimate_over_measured": estimate / measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the differences only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in KINDS:
        for dtype, factor in (("float32", 1), ("float32", 4), ("float64", 1)):
            rows.append(difference(kind, dtype, factor, args.device))
            print(rows[-1], flush=True)
    pl.DataFrame(rows).write_csv(args.out / f"{args.device}_numerics.csv")
    if args.device == "cpu":
        return
    mem = []
    for kind in KINDS:
        mem.append(memory(kind))
        print(mem[-1], flush=True)
    pl.DataFrame(mem).write_csv(args.out / "gpu_memory.csv")


if __name__ == "__main__":
    main()
