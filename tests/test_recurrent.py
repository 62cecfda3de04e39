"""The vmap-friendly LSTM and GRU equal torch's modules, alone and under ``torch.func.vmap``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from ctsim.models.recurrent import GRU, LSTM
from ctsim.validation import ConfigError

SEQ_LEN, FEATURES, HIDDEN, CLASSES = 7, 4, 16, 3
KINDS = {"lstm": (LSTM, nn.LSTM), "gru": (GRU, nn.GRU)}
CASES = [(kind, layers) for kind in KINDS for layers in (1, 2)]
IDS = [f"{kind}-{layers}layer" for kind, layers in CASES]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def pair(kind: str, layers: int, dtype: torch.dtype, seed: int = 0) -> tuple[nn.Module, nn.Module, nn.Linear]:
    """Ours and torch's recurrent module plus a head, ours holding copies of torch's weights."""
    ours_cls, torch_cls = KINDS[kind]
    torch.manual_seed(seed)
    ref = torch_cls(FEATURES, HIDDEN, num_layers=layers, batch_first=True).to(dtype)
    head = nn.Linear(HIDDEN, CLASSES).to(dtype)
    ours = ours_cls((SEQ_LEN, FEATURES), CLASSES, hidden=HIDDEN, layers=layers).to(dtype)
    ours.rnn.load_state_dict(ref.state_dict())
    ours.head.load_state_dict(head.state_dict())
    return ours, ref, head


def torch_final_hidden(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, state = ref(x)
    h_n = state[0] if isinstance(state, tuple) else state  # the LSTM returns (h_n, c_n)
    return h_n[-1]


@pytest.mark.parametrize("kind,layers", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_outputs_equal_torchs(kind, layers, dtype):
    ours, ref, head = pair(kind, layers, dtype)
    x = torch.randn(5, SEQ_LEN, FEATURES, dtype=dtype, generator=torch.Generator().manual_seed(1))
    tol = TOLERANCE[dtype]
    with torch.no_grad():
        expected = torch_final_hidden(ref, x)
        torch.testing.assert_close(ours.embed(x), expected, rtol=0, atol=tol)
        torch.testing.assert_close(ours(x), head(expected), rtol=0, atol=tol)


@pytest.mark.parametrize("kind,layers", CASES, ids=IDS)
def test_gradients_equal_torchs(kind, layers):
    ours, ref, head = pair(kind, layers, torch.float64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, SEQ_LEN, FEATURES, dtype=torch.float64, generator=g)
    cotangent = torch.randn(5, CLASSES, dtype=torch.float64, generator=g)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours(x_ours) * cotangent).sum().backward()
    (head(torch_final_hidden(ref, x_ref)) * cotangent).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-12)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(getattr(ours.rnn, name).grad, p.grad, rtol=0, atol=1e-12, msg=name)
    torch.testing.assert_close(ours.head.weight.grad, head.weight.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,layers", CASES, ids=IDS)
def test_names_shapes_and_initialisation_are_torchs(kind, layers):
    ours_cls, torch_cls = KINDS[kind]
    torch.manual_seed(3)
    ref = torch_cls(FEATURES, HIDDEN, num_layers=layers, batch_first=True)
    torch.manual_seed(3)
    ours = ours_cls((SEQ_LEN, FEATURES), CLASSES, hidden=HIDDEN, layers=layers)
    theirs = ref.state_dict()
    assert list(ours.rnn.state_dict()) == list(theirs)
    for name, value in ours.rnn.state_dict().items():
        assert torch.equal(value, theirs[name]), name  # same draws in the same order: torch's init
    assert set(ours.state_dict()) == {f"rnn.{k}" for k in theirs} | {"head.weight", "head.bias"}


def stacked_call(models: list[nn.Module]):
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def logits(p, b, x):
        return functional_call(base, (p, b), (x,))

    def loss(p, b, x, y):
        return F.cross_entropy(logits(p, b, x), y)

    return params, buffers, logits, loss


@pytest.mark.parametrize("kind,layers", CASES, ids=IDS)
def test_vmap_over_a_stack_of_models_equals_each_model_alone(kind, layers):
    ours_cls, _ = KINDS[kind]
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(ours_cls((SEQ_LEN, FEATURES), CLASSES, hidden=HIDDEN, layers=layers).double())
    g = torch.Generator().manual_seed(4)
    xs = torch.randn(3, 6, SEQ_LEN, FEATURES, dtype=torch.float64, generator=g)  # each model its own batch
    ys = torch.randint(CLASSES, (3, 6), generator=g)
    params, buffers, logits, loss = stacked_call(models)

    outputs = vmap(logits)(params, buffers, xs)
    grads = vmap(grad(loss))(params, buffers, xs, ys)
    for i, model in enumerate(models):
        out = model(xs[i])
        torch.testing.assert_close(outputs[i], out, rtol=0, atol=1e-10)
        model.zero_grad()
        F.cross_entropy(out, ys[i]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_bad_arguments_name_the_key(cls):
    with pytest.raises(
        ConfigError, match=r"input_shape=\(1, 32, 32\): expected \(sequence length, features\)"
    ):
        cls((1, 32, 32), 2)
    with pytest.raises(ConfigError, match=r"hidden=0: expected an integer ≥ 1") as info:
        cls((24, 4), 3, hidden=0, layers=0)
    assert [p.key for p in info.value.problems] == ["hidden", "layers"]
