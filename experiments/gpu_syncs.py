"""Host-device synchronisations and dispatched ops per optimizer step of the batched engine.

    python experiments/gpu_syncs.py [--out results/gpu/syncs.jsonl] [--device cuda|cpu]
                                    [--kinds yearbooknet cnn_dropout mlp] [--models 64]
                                    [--data ragged equal]

A ``train`` call also stacks states, builds its step plan and unstacks the results, so its sync count
mixes setup with steps. Here each population is trained twice, with its jobs' epochs ×1 and ×2, and the
counts per step are the differences divided by the difference in steps: setup cancels out.

Populations per kind: ``ragged``, the four jobs of ``tests/test_engine_equivalence.py`` (different data
sizes, batch sizes and epochs), and ``equal``, ``--models`` jobs of 256 samples, batch 64, 8 epochs.
Counted:

* ``syncs``: on CUDA, the synchronisations ``torch.cuda.set_sync_debug_mode("warn")`` reports;
* ``host_reads``: the dispatched ops that hand a device value to the host (``item()``, ``nonzero``,
  ``equal``; each a synchronisation on CUDA), counted on any device, so the CPU run checks the same;
* ``ops``: every dispatched aten op (each at least one kernel launch on a GPU).

One JSON line per population is appended to ``--out`` as soon as it is counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctsim.engine import BatchedEngine, TrainConfig, TrainJob, job_seed
from ctsim.engine.optim import SGD
from tests.test_engine_equivalence import KINDS, SGDS_F32, _data, _jobs

HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.equal", "aten.is_nonzero")


class Counts(TorchDispatchMode):
    """Counts dispatched aten ops, and those among them that read a device value on the host."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.host_reads += str(func).startswith(HOST_READS)
        return func(*args, **(kwargs or {}))


def count(engine: BatchedEngine, jobs: list[TrainJob], x, y) -> dict:
    """Ops, host reads and (CUDA) reported synchronisations of one ``train`` call."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught, Counts() as counts:
            warnings.simplefilter("always")
            engine.train(jobs, x, y)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught) if cuda else None
    return {"ops": counts.ops, "host_reads": counts.host_reads, "syncs": syncs}


def _longer(jobs: list[TrainJob], factor: int) -> list[TrainJob]:
    """The same jobs with ``factor`` times their epochs."""
    train = [dataclasses.replace(j.train, epochs=j.train.epochs * factor) for j in jobs]
    return [dataclasses.replace(j, train=t) for j, t in zip(jobs, train)]


def per_step(kind: str, data: str, jobs: list[TrainJob], x, y, device: str) -> dict:
    engine = BatchedEngine(device=device)
    engine.train(jobs, x, y)  # warm-up: allocator, kernels, caches
    short, long = count(engine, jobs, x, y), count(engine, _longer(jobs, 2), x, y)
    steps_short = max(j.steps() for j in jobs)
    steps_long = max(j.steps() for j in _longer(jobs, 2))
    row = {
        "table": "syncs",
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "kind": kind,
        "data": data,
        "models": len(jobs),
        "steps_short": steps_short,
        "steps_long": steps_long,
    }
    for key in ("syncs", "host_reads", "ops"):
        row[f"{key}_short"], row[f"{key}_long"] = short[key], long[key]
        row[f"{key}_per_step"] = (
            None if short[key] is None else (long[key] - short[key]) / (steps_long - steps_short)
        )
    return row


def equal_jobs(kind: str, models: int, n: int) -> list[TrainJob]:
    spec = KINDS[kind]
    return [
        TrainJob(
            pipeline=m,
            generation=0,
            model=spec,
            optimizer=SGD(lr=1e-3 * (1 + m % 4), momentum=0.9),
            train=TrainConfig(epochs=8, batch_size=64),  # 32 steps: a sync every 32 steps shows
            keys=torch.randperm(n, generator=torch.Generator().manual_seed(m))[:256],
            seed=job_seed(m, 0),
        )
        for m in range(models)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu/syncs.jsonl"), help="JSON lines")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--kinds", nargs="+", default=["yearbooknet", "cnn_dropout", "mlp"], choices=list(KINDS)
    )
    parser.add_argument("--models", type=int, default=64, help="models of the equal-data population")
    parser.add_argument("--data", nargs="+", default=["ragged", "equal"], choices=["ragged", "equal"])
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        spec = KINDS[kind]
        x, y = _data(spec, n=1024)
        x, y = x.float().to(args.device), y.to(args.device)
        populations = {
            "ragged": _jobs(spec, SGDS_F32, n_data=len(x)),
            "equal": equal_jobs(kind, args.models, len(x)),
        }
        for data in args.data:
            row = per_step(kind, data, populations[data], x, y, args.device)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(row, flush=True)


if __name__ == "__main__":
    main()
