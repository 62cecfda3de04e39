"""The launch audit: aten ops and host syncs per training step of the batched engine, counted on CPU.

Every aten op is at least one kernel launch on a GPU, and a host sync stalls the launch queue. A step
of a stacked population must cost the same ops whatever its size, make one stacked call whatever the
models' data sizes, and wait for the device at most once. Counted with a ``TorchDispatchMode`` inside
each step (:mod:`ctsim.engine.audit`): set-up and result extraction run once per call.

These are deterministic counts, not timings; the models and data are tiny so that 256 models stay fast.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from ctsim.engine import BatchedEngine, TrainConfig, TrainJob, job_seed
from ctsim.engine.audit import Counter
from ctsim.engine.audit import per_step as audit_steps
from ctsim.engine.optim import SGD
from ctsim.models import CNN, MLP, ModelSpec, YearbookNet

KINDS = {
    "mlp": ModelSpec(partial(MLP, hidden=[8]), (1, 4, 4), 3),
    "yearbooknet": ModelSpec(partial(YearbookNet, channels=2, blocks=2), (1, 4, 4), 3),
    "cnn_dropout": ModelSpec(partial(CNN, channels=2, blocks=1, hidden=4, dropout=0.3), (1, 4, 4), 3),
}
RAGGED = (12, 9, 5, 3)  # every fourth model has each data size: the same mix at every population size
BATCH = 4


def _jobs(spec: ModelSpec, models: int, ragged: bool, epochs: int) -> list[TrainJob]:
    sizes = [RAGGED[m % len(RAGGED)] if ragged else RAGGED[0] for m in range(models)]
    train = TrainConfig(epochs=epochs, batch_size=BATCH)
    return [
        TrainJob(m, 0, spec, SGD(lr=0.01, momentum=0.9), train, torch.arange(n), job_seed(m, 0))
        for m, n in enumerate(sizes)
    ]


def per_step(
    spec: ModelSpec, models: int, ragged: bool, epochs: int = 11, ragged_layout: str = "auto"
) -> tuple[float, int, float]:
    """(ops per step, most syncs in one step, calls per step) of training ``models`` models, stacked.
    11 epochs of 3 batches: 33 steps, past the engine's lazy check every 32 steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, *spec.input_shape, generator=g)
    y = torch.randint(0, spec.num_classes, (16,), generator=g)
    engine = BatchedEngine(device="cpu", route="vmap", ragged=ragged_layout)
    audit = audit_steps(engine, _jobs(spec, models, ragged, epochs), x, y)
    return audit.ops, audit.max_syncs, audit.calls


@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_ops_per_step_are_constant_in_the_population_size_with_at_most_one_sync(kind, ragged):
    """8 to 256 models: the same ops per step (a population of one runs the plain module: fewer), one
    stacked call per step whatever the data sizes, and at most one host sync in any step."""
    found = {m: per_step(KINDS[kind], m, ragged) for m in (1, 8, 64, 256)}
    stacked = [found[m][0] for m in (8, 64, 256)]
    assert max(stacked) - min(stacked) <= 4 and found[1][0] <= max(stacked), found
    assert all(syncs <= 1 for _, syncs, _ in found.values()), found
    assert all(calls == 1 for *_, calls in found.values()), found
    assert max(syncs for _, syncs, _ in found.values()) == 1  # the lazy check ran, and was counted


def test_a_ragged_population_split_by_batch_size_makes_several_calls_per_step():
    """The audit sees the difference: ``ragged=split`` (one call per batch size) is what padding removes."""
    assert per_step(KINDS["mlp"], 8, ragged=True, ragged_layout="split")[2] > 1.5


def test_recording_optimizer_state_reads_the_device_the_same_number_of_times_for_any_population():
    """Each job's final optimizer state comes back in one transfer per state tensor, not a sync per model."""
    spec = KINDS["mlp"]
    x, y = torch.rand(16, *spec.input_shape), torch.randint(0, 3, (16,))
    syncs = []
    for models in (2, 16):
        engine = BatchedEngine(device="cpu", route="vmap")
        engine.record_optimizer_state = True
        with Counter() as counter:
            results = engine.train(_jobs(spec, models, ragged=False, epochs=1), x, y)
        assert all(r.optimizer_state for r in results)
        syncs.append(counter.syncs)
    assert syncs[0] == syncs[1], syncs
