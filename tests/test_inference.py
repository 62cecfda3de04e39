"""Exact substitutes for evaluation give bit-identical outputs, and the engines predict with them."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.engine.inference import StridedMaxPool2d, for_inference
from ctsim.models import CNN, ModelSpec, YearbookNet


@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
@pytest.mark.parametrize("size", [(8, 8), (9, 11), (3, 5)])
def test_strided_max_pool_equals_max_pool2d_bit_for_bit(kernel, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, *size, generator=g, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    x[1, 1] = x[1, 1].round()  # ties
    pool = nn.MaxPool2d(kernel)
    fast = for_inference(nn.Sequential(pool))[0]
    assert isinstance(fast, StridedMaxPool2d)
    torch.testing.assert_close(fast(x), pool(x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    "pool",
    [nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2)],
)
def test_pools_without_an_exact_substitute_are_kept(pool):
    assert for_inference(nn.Sequential(pool))[0].__class__ is pool.__class__


@pytest.mark.parametrize("factory", [partial(YearbookNet, channels=8), partial(CNN, channels=8)])
def test_both_engines_predict_exactly_what_the_plain_module_predicts(factory):
    spec = ModelSpec(factory, (1, 32, 32), 3)
    x = torch.rand(150, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    states = [spec.build(seed=s).state_dict() for s in range(3)]
    plain = []
    for state in states:
        net = spec.build()
        net.load_state_dict(state)
        with torch.no_grad():
            plain.append(net.eval()(x).argmax(1))
    expected = torch.stack(plain)
    for engine in (SequentialEngine(device="cpu"), BatchedEngine(device="cpu", route="loop")):
        assert torch.equal(engine.predict(spec, states, x)[0], expected)


@pytest.mark.parametrize("factory", [partial(YearbookNet, channels=8), partial(CNN, channels=8)])
def test_signals_are_exactly_the_plain_modules_embeddings_and_logits(factory):
    """Signal passes (drift triggers' embeddings, scores) run one inference module per architecture,
    with the exact substitutes: every request's embeddings and logits equal the plain module's, bit for
    bit, on every engine and route, also when the engine is asked again (the module is reused)."""
    from ctsim.engine.base import SignalRequest

    spec = ModelSpec(factory, (1, 32, 32), 3)
    x = torch.rand(70, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    states = [spec.build(seed=s).state_dict() for s in range(3)]
    expected = []
    for state in states:
        net = spec.build()
        net.load_state_dict(state)
        with torch.no_grad():  # in the engines' batches: a batch's size can change the rounding
            emb = torch.cat([net.eval().embed(x[i : i + 64]) for i in range(0, len(x), 64)])
            expected.append((emb, torch.cat([net.head(emb[i : i + 64]) for i in range(0, len(x), 64)])))
    needs = frozenset({"embeddings", "logits"})
    engines = (SequentialEngine(device="cpu"), BatchedEngine(device="cpu", route="loop"))
    for engine in (*engines, BatchedEngine(device="cpu", route="vmap")):
        for _ in range(2):
            found = engine.signals([SignalRequest(spec, s, needs) for s in states], x)
            for out, (emb, logits) in zip(found, expected):
                if getattr(engine, "route", None) == "vmap":
                    torch.testing.assert_close(out["embeddings"], emb)  # vmap's batched kernels round
                    torch.testing.assert_close(out["logits"], logits)
                else:
                    assert torch.equal(out["embeddings"], emb) and torch.equal(out["logits"], logits)
        assert any(isinstance(m, StridedMaxPool2d) for m in engine.signal_net(spec).modules())
