from functools import partial

import pytest
import torch

from ctsim.engine import SequentialEngine, TrainConfig, TrainJob
from ctsim.engine.optim import SGD, Adam
from ctsim.models import MLP, ModelSpec, YearbookNet
from ctsim.validation import ConfigError


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x[:, 0, 0, 0] + x[:, 0, 1, 1] > 0).long()  # linearly separable
    return x, y


def _job(keys, epochs=3, batch=16, optimizer=None, parent=None, seed=7, weights=None, model=None):
    model = model or ModelSpec(partial(MLP, hidden=[16]), (1, 4, 4), 2)
    return TrainJob(
        0,
        0,
        model,
        optimizer or SGD(lr=0.1, momentum=0.9),
        TrainConfig(epochs=epochs, batch_size=batch),
        keys,
        seed,
        parent,
        weights,
    )


def _accuracy(engine, job, state, x, y):
    preds = engine.predict(job.model, [state], x).classes
    return (preds[0] == y).float().mean().item()


def test_training_learns_and_counts_steps_and_samples():
    x, y = _data()
    engine = SequentialEngine(device="cpu")
    job = _job(torch.arange(80))
    untrained = job.model.build(seed=job.seed).state_dict()
    (trained,) = engine.train([job], x, y)
    assert trained.steps == 3 * 5 == job.steps()
    assert trained.samples == 3 * 80
    assert trained.status == "ok" and trained.loss < 0.5
    assert _accuracy(engine, job, trained.state, x[80:], y[80:]) > _accuracy(
        engine, job, untrained, x[80:], y[80:]
    )
    assert _accuracy(engine, job, trained.state, x[80:], y[80:]) >= 0.8


def test_same_job_gives_bit_identical_states_and_seeds_matter():
    x, y = _data()
    engine = SequentialEngine(device="cpu")
    a, b = engine.train([_job(torch.arange(64)), _job(torch.arange(64))], x, y)
    (c,) = engine.train([_job(torch.arange(64), seed=8)], x, y)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not torch.equal(a.state["head.weight"], c.state["head.weight"])


def test_finetuning_starts_from_the_parent_state():
    x, y = _data()
    engine = SequentialEngine(device="cpu")
    (first,) = engine.train([_job(torch.arange(64))], x, y)
    job = _job(torch.arange(0), parent=first.state)  # no data: the parent comes back unchanged
    (same,) = engine.train([job], x, y)
    assert same.steps == 0 and all(torch.equal(first.state[k], same.state[k]) for k in first.state)


def test_zero_loss_weights_leave_parameters_unchanged():
    x, y = _data()
    engine = SequentialEngine(device="cpu")
    keys = torch.arange(32)
    job = _job(keys, optimizer=SGD(lr=0.5), weights=torch.zeros(32))
    (trained,) = engine.train([job], x, y)
    init = job.model.build(seed=job.seed).state_dict()
    assert all(torch.equal(init[k], trained.state[k]) for k in init)


def test_float64_and_adam_and_batchnorm_models_train():
    x = torch.rand(40, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    engine = SequentialEngine(device="cpu", dtype="float64")
    job = _job(
        torch.arange(40),
        epochs=1,
        batch=8,
        optimizer=Adam(lr=0.01),
        model=ModelSpec(YearbookNet, (1, 32, 32), 2),
    )
    (trained,) = engine.train([job], x, y)
    assert trained.state["features.0.weight"].dtype == torch.float64
    assert trained.state["features.1.num_batches_tracked"].item() == 5
    preds, logits, seconds = engine.predict(job.model, [trained.state, trained.state], x)
    assert preds.shape == (2, 40) and len(seconds) == 2 and torch.equal(preds[0], preds[1])
    assert logits.shape == (2, 40, 2) and logits.dtype == torch.float64
    assert torch.equal(preds, logits.argmax(-1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dtype": "float16"}, r"dtype='float16'"),
        ({"eval_batch_size": 0}, r"eval_batch_size=0"),
        ({"device": "gpu"}, r"device='gpu': expected one of \['auto', 'cpu', 'cuda'\]"),
    ],
)
def test_bad_engine_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SequentialEngine(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"device='cuda': expected 'auto' or 'cpu': this machine has no CUDA"
    ):
        SequentialEngine(device="cuda")
