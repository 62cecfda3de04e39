"""The GPU contract, measured: batched against sequential on one device, per model kind and step count.

    python experiments/gpu_numerics.py [--out results/gpu/numerics.jsonl] [--device cuda|cpu]
                                       [--kinds mlp lstm ...] [--factors 1 4]

For each model kind of the equivalence tests, the jobs of ``tests/test_engine_equivalence.py`` (four
jobs of 100-160 steps that differ in data size, batch size and epochs), and the same jobs with their
epochs multiplied by each ``--factors`` value, are trained by both engines: float32 at realistic step
sizes, float64 at large ones. Each job gives one row: its steps and the largest difference between the
engines' parameters, buffers and optimizer state, relative to each tensor's largest value (float32) or
absolute (float64). On CUDA, per kind, one more row compares the memory a stacked call of 16 models
took with the engine's estimate (``ctsim.engine.memory``).

Rows are appended to ``--out`` as JSON lines the moment each is measured (a run stopped by a timeout
keeps what it measured): the tests' float32 step count for every kind first, then float64, then the
longer runs, then memory. ``experiments/gpu_summary.py`` turns them into the tolerance per kind that
``CUDA_FLOAT32`` in the equivalence tests is to be set from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.engine.memory import per_model_bytes
from tests.test_engine_equivalence import KINDS, SGDS, SGDS_F32, _data, _jobs


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def differences(kind: str, dtype: str, epochs_factor: int, device: str) -> list[dict]:
    """One row per job: the largest batched-vs-sequential difference over its floating-point state."""
    spec = KINDS[kind]
    x, y = _data(spec)
    x, y = x.to(device, torch.float32 if dtype == "float32" else torch.float64), y.to(device)
    jobs = [
        dataclasses.replace(j, train=dataclasses.replace(j.train, epochs=j.train.epochs * epochs_factor))
        for j in _jobs(spec, SGDS_F32 if dtype == "float32" else SGDS)
    ]
    start = time.perf_counter()
    seq = SequentialEngine(device=device, dtype=dtype).train(jobs, x, y)
    bat = BatchedEngine(device=device, dtype=dtype).train(jobs, x, y)
    seconds = time.perf_counter() - start
    rows = []
    for job, s, b in zip(jobs, seq, bat):
        worst = 0.0
        for k, v in s.state.items():
            if v.is_floating_point():
                diff = (b.state[k] - v).abs().max().item()
                worst = max(worst, diff / (v.abs().max().item() or 1.0) if dtype == "float32" else diff)
        rows.append(
            {
                "table": "difference",
                "device": device,
                "device_name": _device_name(device),
                "kind": kind,
                "dtype": dtype,
                "epochs_factor": epochs_factor,
                "job": job.pipeline,
                "steps": job.steps(),
                "status": f"{s.status}/{b.status}",
                "difference": worst,
                "relative": dtype == "float32",
                "seconds_both_engines": seconds,
            }
        )
    return rows


def memory(kind: str, models: int = 16, batch: int = 64) -> dict:
    """Peak CUDA memory per model of one stacked training call, against the engine's estimate."""
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
        "table": "memory",
        "device": "cuda",
        "device_name": _device_name("cuda"),
        "kind": kind,
        "models": models,
        "batch": batch,
        "measured_bytes_per_model": measured,
        "estimated_bytes_per_model": estimate,
        "estimate_over_measured": estimate / measured,
    }


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(row, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu/numerics.jsonl"), help="JSON lines")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: differences only")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4], help="epochs multipliers")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plan = [("float32", args.factors[0]), ("float64", args.factors[0])]
    plan += [("float32", f) for f in args.factors[1:]]
    for dtype, factor in plan:
        for kind in args.kinds:
            for row in differences(kind, dtype, factor, args.device):
                _append(args.out, row)
    if args.device == "cuda":
        for kind in args.kinds:
            _append(args.out, memory(kind))


if __name__ == "__main__":
    main()
