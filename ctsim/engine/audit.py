"""The launch audit: aten ops, host syncs and stacked calls per training step of the batched engine.

Every dispatched aten op is at least one kernel launch on a GPU (views aside), and a host sync stalls
the launch queue, so these counts, taken on any device, say how a step will scale on a GPU where the
host sets the pace. They are deterministic, unlike timings. The tests assert them
(``tests/test_launch_audit.py``) and the benchmark reports them (``ctsim bench --cases ragged``).

>>> from ctsim.engine import BatchedEngine, TrainConfig, TrainJob
>>> from ctsim.models import MLP, ModelSpec
>>> from ctsim.engine.optim import SGD
>>> spec = ModelSpec(MLP, (4,), 2)
>>> jobs = [TrainJob(m, 0, spec, SGD(), TrainConfig(epochs=1, batch_size=4), torch.arange(n), m)
...         for m, n in enumerate([8, 6, 3])]
>>> audit = per_step(BatchedEngine(device="cpu", route="vmap"), jobs, torch.rand(8, 4), torch.zeros(8).long())
>>> audit.calls, audit.max_syncs
(1.0, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops that make the host wait for the device: a value read back, or an output whose shape depends on data
SYNCS = (
    "aten._local_scalar_dense",
    "aten.item",
    "aten.is_nonzero",
    "aten.equal",
    "aten.nonzero",
    "aten.masked_select",
    "aten._unique",
    "aten.unique",
)


class Counter(TorchDispatchMode):
    """Counts the aten ops dispatched while active, and those of them that sync the host."""

    def __init__(self):
        super().__init__()
        self.ops = self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if str(func.overloadpacket).startswith(SYNCS):
            self.syncs += 1
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Audit:
    """Per optimizer step of one ``train`` call: mean ops, the most syncs of any step, mean stacked calls."""

    steps: int
    ops: float
    max_syncs: int
    calls: float


def per_step(engine, jobs: Sequence, x: torch.Tensor, y: torch.Tensor) -> Audit:
    """Train ``jobs`` on the batched ``engine`` and count inside each step only (set-up and result
    extraction run once per call, whatever the number of steps)."""
    from ctsim.engine.batched import BatchedEngine

    counters: list[Counter] = []
    calls: list[None] = []
    step, call = BatchedEngine._step, BatchedEngine._call

    def counted_step(self, *args):
        with Counter() as counter:
            out = step(self, *args)
        counters.append(counter)
        return out

    def counted_call(self, *args):
        calls.append(None)
        return call(self, *args)

    BatchedEngine._step, BatchedEngine._call = counted_step, counted_call
    try:
        engine.train(jobs, x, y)
    finally:
        BatchedEngine._step, BatchedEngine._call = step, call
    if not counters:
        return Audit(0, 0.0, 0, 0.0)
    return Audit(
        steps=len(counters),
        ops=sum(c.ops for c in counters) / len(counters),
        max_syncs=max(c.syncs for c in counters),
        calls=len(calls) / len(counters),
    )
