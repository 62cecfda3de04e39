"""Model signals (the seam policies will read): one engine call for many models, batched equal to alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.engine.base import SIGNALS, SignalRequest
from ctsim.models import ModelSpec
from ctsim.validation import ConfigError

from .test_engine_equivalence import KINDS  # MLP, YearbookNet, CNN with dropout, LSTM, GRU

ALL = frozenset(SIGNALS)


def _state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """A state unlike a fresh one: seeded weights, and BatchNorm statistics moved off their defaults."""
    model = spec.build(seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(1000 + seed)
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = v + torch.rand(v.shape, generator=g, dtype=v.dtype)
        elif k.endswith("running_mean"):
            state[k] = torch.randn(v.shape, generator=g, dtype=v.dtype)
    return state


def _batch(spec: ModelSpec, n: int = 70):
    g = torch.Generator().manual_seed(7)
    return torch.rand(n, *spec.input_shape, generator=g, dtype=torch.float64), torch.randint(
        0, spec.num_classes, (n,), generator=g
    )


def _alone(spec: ModelSpec, state, x, y) -> dict[str, torch.Tensor]:
    """The signals of one model, computed directly: the reference."""
    model = spec.build(dtype=torch.float64).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        emb, logits = model.embed(x), model(x)
    return {
        "embeddings": emb,
        "logits": logits,
        "predictions": logits.argmax(1),
        "loss": F.cross_entropy(logits, y, reduction="none"),
    }


ENGINES = {
    "sequential": lambda: SequentialEngine(device="cpu", dtype="float64"),
    "batched-vmap": lambda: BatchedEngine(device="cpu", dtype="float64", route="vmap"),
    "batched-loop": lambda: BatchedEngine(device="cpu", dtype="float64", route="loop"),
}


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINES)
@pytest.mark.parametrize("kind", KINDS)
def test_signals_of_many_models_in_one_call_equal_each_model_alone(kind, engine):
    spec = KINDS[kind]
    x, y = _batch(spec)
    states = [_state(spec, s) for s in range(4)]
    found = ENGINES[engine]().signals([SignalRequest(spec, s, ALL) for s in states], x, y)
    for state, got in zip(states, found):
        want = _alone(spec, state, x, y)
        assert set(got) == set(SIGNALS)
        for name in ("embeddings", "logits", "loss"):
            torch.testing.assert_close(got[name].cpu(), want[name], rtol=0, atol=1e-10, msg=name)
        assert torch.equal(got["predictions"].cpu(), want["predictions"])
    # the models differ, so a call that mixed them up could not pass
    assert not torch.allclose(found[0]["logits"], found[1]["logits"])


def test_one_call_serves_mixed_architectures_and_needs_in_request_order():
    mlp, lstm, cnn = KINDS["mlp"], KINDS["lstm"], KINDS["cnn_dropout"]
    x_img, y = _batch(mlp)
    requests = [
        SignalRequest(mlp, _state(mlp, 0), frozenset({"predictions"})),
        SignalRequest(mlp, _state(mlp, 1), frozenset({"embeddings", "loss"})),
        SignalRequest(mlp, _state(mlp, 2), frozenset()),
    ]
    found = BatchedEngine(device="cpu", dtype="float64").signals(requests, x_img, y)
    assert [set(f) for f in found] == [{"predictions"}, {"embeddings", "loss"}, set()]
    want = _alone(mlp, requests[1].state, x_img, y)
    torch.testing.assert_close(found[1]["loss"], want["loss"], rtol=0, atol=1e-10)
    # architectures whose inputs differ cannot share a batch: each group is its own pass
    for spec in (lstm, cnn):
        xs, ys = _batch(spec)
        got = BatchedEngine(device="cpu", dtype="float64").signals(
            [SignalRequest(spec, _state(spec, 3), ALL), SignalRequest(spec, _state(spec, 4), ALL)], xs, ys
        )
        torch.testing.assert_close(got[1]["logits"], _alone(spec, _state(spec, 4), xs, ys)["logits"])


def test_signals_in_uneven_chunks_equal_one_call():
    spec = KINDS["mlp"]
    x, y = _batch(spec)
    requests = [SignalRequest(spec, _state(spec, s), ALL) for s in range(7)]
    whole = BatchedEngine(device="cpu", dtype="float64", route="vmap").signals(requests, x, y)
    chunked = BatchedEngine(device="cpu", dtype="float64", route="vmap", max_models=3).signals(requests, x, y)
    for a, b in zip(whole, chunked):
        for name in SIGNALS:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_an_unknown_signal_is_named():
    spec = KINDS["mlp"]
    with pytest.raises(ConfigError, match=r"signals=\['embedding'\]: expected names from"):
        SignalRequest(spec, _state(spec, 0), frozenset({"embedding"}))


def test_the_loss_needs_labels():
    spec = KINDS["mlp"]
    x, _ = _batch(spec)
    with pytest.raises(ValueError, match="needs the batch's labels"):
        SequentialEngine(device="cpu").signals([SignalRequest(spec, _state(spec, 0), frozenset({"loss"}))], x)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINES)
def test_requests_read_their_own_rows_and_shared_rows_share_a_pass(engine):
    """The loop's call: every pipeline on the arrival batch (one keys object), one on its reference rows."""
    spec = KINDS["mlp"]
    x, y = _batch(spec, n=90)
    batch, reference = torch.arange(60, 90), torch.tensor([3, 1, 4, 15, 9, 26])
    states = [_state(spec, s) for s in range(3)]
    requests = [SignalRequest(spec, s, ALL, batch) for s in states]
    requests.append(SignalRequest(spec, states[1], frozenset({"embeddings"}), reference))
    found = ENGINES[engine]().signals(requests, x, y)
    for state, got in zip(states, found):
        want = _alone(spec, state, x[batch], y[batch])
        torch.testing.assert_close(got["logits"].cpu(), want["logits"], rtol=0, atol=1e-10)
        torch.testing.assert_close(got["loss"].cpu(), want["loss"], rtol=0, atol=1e-10)
    want = _alone(spec, states[1], x[reference], y[reference])["embeddings"]
    torch.testing.assert_close(found[3]["embeddings"].cpu(), want, rtol=0, atol=1e-10)
    assert found[3]["embeddings"].shape[0] == len(reference)


def _kernels_of_signals(spec: ModelSpec, models: int) -> list[str]:
    """The ops (views left out) of one batched signals call for ``models`` requests of one architecture."""
    from ctsim.engine.audit import Counter

    x, y = _batch(spec, n=20)
    keys = torch.arange(20)
    requests = [SignalRequest(spec, _state(spec, m), ALL, keys) for m in range(models)]
    engine = BatchedEngine(device="cpu", dtype="float64", route="vmap")
    engine.signals(requests[:2], x, y)  # builds what is kept between calls

    class Kernels(Counter):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    with Kernels() as log:
        engine.signals(requests, x, y)
    return log.names


@pytest.mark.parametrize("kind", ["mlp", "yearbooknet"])
def test_batched_signals_take_the_same_ops_for_any_number_of_models(kind):
    """One stacked pass per architecture: embeddings, logits, predictions and losses of 3 and of 12
    models cost the same ops (no loop over models on the device)."""
    assert _kernels_of_signals(KINDS[kind], 3) == _kernels_of_signals(KINDS[kind], 12)
