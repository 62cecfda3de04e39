"""The stacked optimizers equal torch.optim run model by model, and cost the same ops for any M.

The optimizer works on flat ``(M, P)`` parameters: each model's tensors flattened and concatenated."""

import pytest
import torch

from ctsim.engine.functional_optim import StackedOptimizer, clip_grad_norm_
from ctsim.engine.optim import SGD, Adam, AdamW

from .conftest import OpLog

SHAPES = {"bias": (3,), "weight": (4, 5), "conv": (2, 3, 3)}
STEPS = 120

CASES = {
    "sgd": [SGD(lr=0.1), SGD(lr=0.05), SGD(lr=0.3), SGD(lr=0.01)],
    "sgd_momentum": [
        SGD(lr=0.1, momentum=0.9),
        SGD(lr=0.05, momentum=0.5),
        SGD(lr=0.3, momentum=0.0),
        SGD(lr=0.01, momentum=0.99),
    ],
    "sgd_nesterov_weight_decay": [
        SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        SGD(lr=0.05, momentum=0.5, weight_decay=0.1),
        SGD(lr=0.2, momentum=0.8, nesterov=True),
        SGD(lr=0.01),
    ],
    "adam": [
        Adam(),
        Adam(lr=0.01, betas=(0.8, 0.99)),
        Adam(lr=0.1, eps=1e-6),
        Adam(lr=3e-4, betas=(0.0, 0.9)),
    ],
    "adam_weight_decay": [
        Adam(weight_decay=0.1),
        Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.5),
        Adam(lr=0.1),
        Adam(lr=3e-4, eps=1e-4, weight_decay=0.01),
    ],
    "adamw": [
        AdamW(),
        AdamW(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
        AdamW(lr=0.1, weight_decay=0.0),
        AdamW(lr=3e-4, eps=1e-6, weight_decay=0.5),
    ],
}


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(len(v), -1) for v in tensors.values()], dim=1)


def _split(row: torch.Tensor) -> dict[str, torch.Tensor]:
    """One model's flat row back into its named tensors."""
    out, start = {}, 0
    for k, shape in SHAPES.items():
        size = torch.Size(shape).numel()
        out[k] = row[start : start + size].view(shape)
        start += size
    return out


def _scenario(m: int, steps: int, dtype: torch.dtype, seed: int = 0):
    """Random stacked params, per-step grads, active masks and lr factors for m models."""
    g = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(m, *s, generator=g, dtype=dtype) for k, s in SHAPES.items()}
    grads = [
        {k: torch.randn(m, *s, generator=g, dtype=dtype) for k, s in SHAPES.items()} for _ in range(steps)
    ]
    active = torch.rand(steps, m, generator=g) < 0.8
    active[0, 1 % m] = False  # model 1's first step comes after the others'
    active[steps // 2 :, m - 1] = False  # the last model stops early
    factors = 0.5 + torch.rand(steps, m, generator=g, dtype=torch.float64)
    return params, grads, active, factors


def _reference(specs, params, grads, active, factors):
    """Each model alone, with its own torch.optim optimizer, stepped on its active steps only."""
    models = []
    for m, spec in enumerate(specs):
        ps = {k: torch.nn.Parameter(v[m].clone()) for k, v in params.items()}
        opt = spec.torch(ps.values())
        for t, step_grads in enumerate(grads):
            if active[t, m]:
                for k, p in ps.items():
                    p.grad = step_grads[k][m].clone()
                opt.param_groups[0]["lr"] = spec.lr * factors[t, m].item()
                opt.step()
        models.append((ps, opt))
    return models


def _lr(specs, factors: torch.Tensor) -> torch.Tensor:
    """Each model's learning rate at each step, as a Python float ``lr * factor`` (as the engines set it)."""
    return torch.tensor(
        [[s.lr * f for s, f in zip(specs, row)] for row in factors.tolist()], dtype=torch.float64
    )


def _snapshot(opt: StackedOptimizer, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Copies of every stacked tensor a step may touch: parameters, optimizer state, step counts."""
    return {k: v.clone() for k, v in {"params": params, **opt.state, "steps": opt.steps}.items()}


def _run_stacked(specs, params, grads, active, factors):
    params = _flat(params)
    lr = _lr(specs, factors)
    opt = StackedOptimizer(specs, params)
    opt.plan(active, lr)
    for t, step_grads in enumerate(grads):
        before = _snapshot(opt, params)
        flat = _flat(step_grads).masked_fill(~active[t].unsqueeze(1), 0.0)  # as the engine passes them
        opt.step(params, flat, t, active[t])
        after = _snapshot(opt, params)
        for m in (~active[t]).nonzero().flatten().tolist():  # sat out: bit-identical
            assert all(torch.equal(before[k][m], after[k][m]) for k in before)
    return params, opt


@pytest.mark.parametrize(
    ("case", "dtype"),
    [(case, torch.float64) for case in CASES]
    + [("adam", torch.float32), ("sgd_nesterov_weight_decay", torch.float32)],
)
def test_stacked_optimizer_matches_torch_optim_model_by_model(case, dtype):
    specs = CASES[case]
    params, grads, active, factors = _scenario(len(specs), STEPS, dtype)
    stacked, opt = _run_stacked(specs, params, grads, active, factors)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for m, (ps, ref_opt) in enumerate(_reference(specs, params, grads, active, factors)):
        state = opt.model_state(m)
        mine = _split(stacked[m])
        for k, p in ps.items():
            torch.testing.assert_close(mine[k], p.detach(), **tol)
            expected = ref_opt.state[p]
            assert state.keys() == expected.keys()
            for key, value in expected.items():
                got = state[key] if key == "step" else _split(state[key])[k]
                torch.testing.assert_close(got, value, check_dtype=False, **tol)
        assert opt.steps[m] == active[:, m].sum()


def test_every_model_moved_and_the_early_stopper_stopped():
    """Guards the scenario above: it exercises skipped steps, late starts and an early stop."""
    _, _, active, _ = _scenario(4, STEPS, torch.float64)
    assert not active[0, 1] and active[:, 1].any()
    assert not active[STEPS // 2 :, 3].any() and active[: STEPS // 2, 3].any()
    assert (~active[:, 0]).any() and (~active[:, 2]).any()


def test_one_optimizer_class_for_all_models():
    params = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"one optimizer class.*\['Adam', 'AdamW'\]"):
        StackedOptimizer([Adam(), AdamW()], params)
    with pytest.raises(ValueError, match="with 3 rows"):
        StackedOptimizer([SGD()] * 3, params)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clip_grad_norm_matches_torch_per_model(dtype):
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.01, 1.0, 10.0, 5.0, 3.0], dtype=dtype)
    grads = {
        k: torch.randn(5, *s, generator=g, dtype=dtype) * scale.view(-1, *[1] * len(s))
        for k, s in SHAPES.items()
    }
    max_norm = torch.tensor([1.0, 2.0, float("inf"), 0.5, 1e6], dtype=torch.float64)
    before = {k: v.clone() for k, v in grads.items()}
    flat = _flat(grads)
    norms = clip_grad_norm_(flat, max_norm)
    grads = {k: torch.stack([_split(row)[k] for row in flat]) for k in SHAPES}
    tol = {"rtol": 1e-14, "atol": 0.0} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 0.0}
    for m, limit in enumerate(max_norm.tolist()):
        ps = [torch.nn.Parameter(v[m].clone()) for v in before.values()]
        for p in ps:
            p.grad = p.detach().clone()
        if limit == float("inf"):  # the engine clips no model whose max_norm is inf
            expected = torch.nn.utils.get_total_norm([p.grad for p in ps])
            assert all(torch.equal(grads[k][m], before[k][m]) for k in grads)
        else:
            expected = torch.nn.utils.clip_grad_norm_(ps, limit)
            for k, p in zip(grads, ps):
                torch.testing.assert_close(grads[k][m], p.grad, **tol)
        torch.testing.assert_close(norms[m], expected, **tol)
    assert norms[0] < 1.0 < norms[1]  # model 0 is below its limit, the others above


def _ops_of_one_step(specs, m):
    params, grads, active, factors = _scenario(m, 2, torch.float32)
    specs = [specs[i % len(specs)] for i in range(m)]
    params, lr = _flat(params), _lr(specs, factors)
    opt = StackedOptimizer(specs, params)
    opt.plan(active, lr)
    opt.step(params, _flat(grads[0]), 0, active[0])
    grads = _flat(grads[1])
    with OpLog() as log:
        opt.step(params, grads, 1, active[1])
    return log.ops


@pytest.mark.parametrize("case", ["sgd", "sgd_nesterov_weight_decay", "adam", "adamw"])
def test_ops_per_step_do_not_grow_with_the_number_of_models(case):
    ops = _ops_of_one_step(CASES[case], 2)
    assert ops == _ops_of_one_step(CASES[case], 64)


def _ops_of_clip(m):
    grads, _, _, _ = _scenario(m, 1, torch.float32)
    max_norm, grads = torch.full((m,), 1.0), _flat(grads)
    with OpLog() as log:
        clip_grad_norm_(grads, max_norm)
    return log.ops


def test_clip_ops_do_not_grow_with_the_number_of_models():
    assert _ops_of_clip(2) == _ops_of_clip(64)
