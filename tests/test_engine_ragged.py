"""Ragged populations: one padded, masked call per step (``engine.ragged=pad``, the default).

The numerics contract of padded calls against the sequential engine is checked for every model kind by
``tests/test_engine_equivalence.py`` (its jobs differ in data size, batch size and epochs); here: the
pieces that make it hold, each against its plain torch counterpart.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch
from torch import nn

from ctsim.engine import BatchedEngine, SequentialEngine, TrainConfig, TrainJob, job_seed
from ctsim.engine.optim import SGD, Adam
from ctsim.engine.stack import masked_batchnorm
from ctsim.models import MLP, ModelSpec, YearbookNet
from ctsim.validation import ConfigError

SPECS = {
    "mlp": ModelSpec(partial(MLP, hidden=[12]), (1, 4, 4), 3),
    "yearbooknet": ModelSpec(partial(YearbookNet, channels=3, blocks=2), (1, 8, 8), 3),
}


@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 5), (6, 4, 3, 3)])
def test_masked_batchnorm_equals_torch_batchnorm_on_the_valid_samples(shape):
    """Output, gradients and running statistics of the valid samples, as nn.BatchNorm gives them alone."""
    g = torch.Generator().manual_seed(0)
    layer = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[len(shape)](4).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5, generator=g)
        layer.bias.uniform_(-1, 1, generator=g)
    masked = nn.Sequential(nn.Identity(), type(layer)(4).double())
    masked[1].load_state_dict(layer.state_dict())
    assert masked_batchnorm(masked) == ["1"]
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([True, True, False, True, False, False])
    masked[1].valid = valid
    out = masked(x)
    ref_x = x.detach()[valid].requires_grad_()
    ref = layer(ref_x)
    torch.testing.assert_close(out[valid], ref, rtol=0, atol=1e-12)
    (out[valid] * torch.arange(ref.numel()).view(ref.shape)).sum().backward()
    (ref * torch.arange(ref.numel()).view(ref.shape)).sum().backward()
    torch.testing.assert_close(x.grad[valid], ref_x.grad, rtol=0, atol=1e-12)
    assert x.grad[~valid].abs().max() == 0  # padding gets no gradient
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(masked[1], name), getattr(layer, name), rtol=0, atol=1e-14)


def _jobs(spec, epochs_of_second: int, optimizer) -> list[TrainJob]:
    """Job 0: 37 samples, 2 epochs; job 1: 90 samples, ``epochs_of_second`` epochs (more steps)."""
    jobs = []
    for m, (n, epochs) in enumerate([(37, 2), (90, epochs_of_second)]):
        keys = torch.randperm(120, generator=torch.Generator().manual_seed(m))[:n]
        train = TrainConfig(epochs=epochs, batch_size=8)
        jobs.append(TrainJob(m, 0, spec, optimizer, train, keys, job_seed(m, 0)))
    return jobs


@pytest.mark.parametrize("optimizer", [SGD(lr=0.05, momentum=0.9), Adam(lr=3e-3)], ids=["sgd", "adam"])
@pytest.mark.parametrize("kind", list(SPECS))
def test_a_model_that_has_finished_is_left_bit_for_bit_as_it_was(kind, optimizer):
    """Job 0 finishes while job 1 goes on for 2 or 4 more epochs: its parameters, BatchNorm statistics
    and optimizer state come out bit for bit the same (no update, no state change once done), and
    within the contract of the sequential engine."""
    spec = SPECS[kind]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, *spec.input_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (120,), generator=g)
    found = []
    for epochs in (4, 6):
        engine = BatchedEngine(device="cpu", dtype="float64", route="vmap", ragged="pad")
        engine.record_optimizer_state = True
        found.append(engine.train(_jobs(spec, epochs, optimizer), x, y)[0])
    a, b = found
    assert a.steps == b.steps == 10
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    for name, state in a.optimizer_state.items():
        assert all(torch.equal(v, b.optimizer_state[name][k]) for k, v in state.items()), name
    alone = SequentialEngine(device="cpu", dtype="float64").train(_jobs(spec, 4, optimizer)[:1], x, y)[0]
    for k, v in alone.state.items():
        assert (a.state[k].double() - v.double()).abs().max() <= 1e-9, k


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "equal"])
def test_padding_and_splitting_agree_with_each_other_and_with_the_sequential_engine(ragged):
    """The same jobs, padded and split by batch size: both within 1e-9 of the sequential engine, BatchNorm
    statistics included (ragged jobs, and equal ones, which take one unpadded call per step)."""
    spec = SPECS["yearbooknet"]
    g = torch.Generator().manual_seed(2)
    x = torch.rand(120, *spec.input_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (120,), generator=g)
    jobs = _jobs(spec, 3, SGD(lr=0.05, momentum=0.9))
    if not ragged:
        jobs = [jobs[1], replace(jobs[1], pipeline=2, seed=job_seed(2, 0))]
    reference = SequentialEngine(device="cpu", dtype="float64").train(jobs, x, y)
    for layout in ("pad", "split"):
        trained = BatchedEngine(device="cpu", dtype="float64", route="vmap", ragged=layout).train(jobs, x, y)
        for got, want in zip(trained, reference):
            assert got.steps == want.steps and got.samples == want.samples
            for k, v in want.state.items():
                assert (got.state[k].double() - v.double()).abs().max() <= 1e-9, (layout, k)


def test_a_bad_ragged_setting_is_named():
    with pytest.raises(ConfigError, match=r"ragged='even': expected one of \['auto', 'pad', 'split'\]"):
        BatchedEngine(device="cpu", ragged="even")


def test_auto_pads_where_splitting_would_make_several_calls_per_step_and_splits_where_not():
    """``ragged=auto``: padded calls for sizes that differ at most steps, split ones where only the last
    batch of an epoch differs (splitting then makes about one call per step, without a mask)."""
    from ctsim.engine.audit import per_step

    spec = SPECS["mlp"]
    x, y = torch.rand(120, *spec.input_shape), torch.randint(0, 3, (120,))

    def calls(sizes: list[int], batches: list[int]) -> tuple[float, bool]:
        jobs = [
            TrainJob(m, 0, spec, SGD(lr=0.01), TrainConfig(epochs=2, batch_size=b), torch.arange(n), m)
            for m, (n, b) in enumerate(zip(sizes, batches))
        ]
        engine = BatchedEngine(device="cpu", route="vmap")
        padded = []
        plan = BatchedEngine._train_chunk

        def spy(self, jobs, x, y, vmapped, width=None, *rest):
            padded.append(width is not None)
            return plan(self, jobs, x, y, vmapped, width, *rest)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(BatchedEngine, "_train_chunk", spy)
            audit = per_step(engine, jobs, x, y)
        return audit.calls, padded[0]

    assert calls([40, 30, 20], [8, 6, 4]) == (1.0, True)  # other batch sizes: padded
    assert calls([120, 118], [8, 8]) == (pytest.approx(16 / 15), False)  # last batches differ: split


def test_engine_ragged_is_a_config_key_checked_at_start_up(tmp_path):
    """From the user's side: ``engine.ragged=split`` reaches the engine; a bad value stops the run
    before any work, naming the key and the choices."""
    from .conftest import build, small

    assert build(small(tmp_path, "engine.ragged=split")).engine.ragged == "split"
    assert build(small(tmp_path)).engine.ragged == "auto"
    expected = r"engine\.ragged='even': expected one of \['auto', 'pad', 'split'\]"
    with pytest.raises(ConfigError, match=expected):
        build(small(tmp_path, "engine.ragged=even"))
