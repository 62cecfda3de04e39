"""The same checks over every trigger and selection policy that conf/ offers (as river's estimator suite).

Each policy: its YAML instantiates; it is deterministic (fresh instances decide alike); it does not
mutate what it is shown; its docstring carries a runnable example (run by the doctests).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ctsim.cli import CONF_DIR
from ctsim.engine import SequentialEngine
from ctsim.models import MLP, ModelSpec
from ctsim.selection.base import Selection, SelectionContext, context_from_intervals
from ctsim.stream import toy_stream
from ctsim.triggers.base import Trained, TriggerContext, gather, wants_of

TRIGGERS = sorted((CONF_DIR / "trigger").glob("*.yaml"))
SELECTIONS = sorted((CONF_DIR / "selection").glob("*.yaml"))


def _compose(group, path):
    """As ``<group>=<option>`` composes it: options may pick nested groups (a detector, a downsampler)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        return compose("config", overrides=[f"{group}={path.stem}"])[group]


def _make_trigger(path):
    return instantiate(_compose("trigger", path), _convert_="all")


SPEC = ModelSpec(partial(MLP, hidden=[8]), (1, 4, 4), 2)
STATE = SPEC.build(seed=0).state_dict()


def _trigger_decisions(trigger, stream):
    """Replay, recording every context shown and every answer; contexts are checked afterwards.

    Wants are answered by one fixed model (the active model of every generation)."""
    engine = SequentialEngine(device="cpu")
    shown, answers, last, gens = [], [], 0, []
    for batch in stream.batches:
        since = stream.arrival_order[last : batch.stop]
        ctx = TriggerContext(
            batch,
            stream.arrival_order[: batch.stop],
            since,
            len(gens),
            stream,
            stream.x,
            stream.y,
            tuple(gens),
        )
        wants = wants_of(trigger, ctx)
        ctx = replace(
            ctx, signals=gather(engine, [(SPEC, STATE if gens else None, wants)], stream.x, stream.y)[0]
        )
        before = (ctx.seen.clone(), ctx.since_trigger.clone(), batch.keys.clone(), stream.x.clone())
        answers.append(trigger.observe(ctx))
        shown.append((ctx, before))
        if answers[-1] is not None:
            gens.append(Trained(len(gens), since, len(since), len(since), len(since), 0.0))
            last = batch.stop
    return answers, shown


def test_every_group_option_is_covered():
    assert {p.stem for p in TRIGGERS} >= {
        "time",
        "amount",
        "always",
        "never",
        "drift",
        "performance",
        "cost",
        "ensemble",
    }
    assert {p.stem for p in SELECTIONS} >= {
        "new",
        "all",
        "uniform",
        "reservoir",
        "class_balanced",
        "trigger_balanced",
        "freshness",
        "window",
    }


@pytest.mark.parametrize("path", TRIGGERS, ids=lambda p: p.stem)
def test_trigger_conformance(path):
    stream = toy_stream([25, 30, 28, 21, 36, 24] * 3, arrival_batch=10, test_fraction=0.2)
    first, shown = _trigger_decisions(_make_trigger(path), stream)
    second, _ = _trigger_decisions(_make_trigger(path), stream)
    assert first == second
    assert all(a is None or (isinstance(a, str) and a) for a in first)
    for ctx, (seen, since, keys, x) in shown:
        assert torch.equal(ctx.seen, seen) and torch.equal(ctx.since_trigger, since)
        assert torch.equal(ctx.batch.keys, keys) and torch.equal(ctx.x, x)
    trigger = _make_trigger(path)
    assert ">>>" in inspect.getdoc(type(trigger))
    if hasattr(trigger, "state_dict"):  # restorable state is optional; when there, it round-trips
        trigger.load_state_dict(trigger.state_dict())


@pytest.mark.parametrize("path", SELECTIONS, ids=lambda p: p.stem)
def test_selection_conformance(path):
    intervals = [torch.arange(0, 4), torch.arange(4, 6), torch.arange(6, 11)]
    stream = toy_stream([3, 3, 5])  # keys 0-10, both classes, three slices

    def ctx(seed=0):
        return SelectionContext(
            torch.cat(intervals),
            intervals[-1],
            tuple(intervals[:-1]),
            torch.Generator().manual_seed(seed),
            stream,
        )

    cfg = _compose("selection", path)

    def make():
        return instantiate(cfg, _convert_="all")

    shown = ctx()
    kept = (shown.seen.clone(), shown.since_trigger.clone(), [e.clone() for e in shown.earlier])
    labels = stream.y.clone()
    a = make().select(shown)
    b = make().select(ctx())
    assert isinstance(a, Selection)
    assert torch.equal(a.keys, b.keys)
    assert a.keys.dtype == torch.long and set(a.keys.tolist()) <= set(range(11))
    assert len(set(a.keys.tolist())) == len(a.keys)  # no key twice
    assert a.weights is None or a.weights.shape == a.keys.shape
    assert torch.equal(shown.seen, kept[0]) and torch.equal(shown.since_trigger, kept[1])
    assert all(torch.equal(x, y) for x, y in zip(shown.earlier, kept[2]))
    assert torch.equal(stream.y, labels)
    a.keys.add_(100)  # the keys are the policy's own, not a view of the context
    assert torch.equal(shown.seen, kept[0]) and torch.equal(shown.since_trigger, kept[1])
    assert all(torch.equal(x, y) for x, y in zip(shown.earlier, kept[2]))
    assert ">>>" in inspect.getdoc(type(make()))
    policy = make()
    if hasattr(policy, "state_dict"):  # restorable state is optional; when there, it round-trips
        policy.select(ctx())
        restored = make()
        restored.load_state_dict(policy.state_dict())
        assert torch.equal(restored.select(ctx(1)).keys, policy.select(ctx(1)).keys)


@pytest.mark.parametrize("option", ["uniform", "freshness"])
@pytest.mark.parametrize(
    "budget,size", [([], 6), (["selection.limit=3"], 3), (["selection.fraction=0.25"], 3)]
)
def test_a_default_budget_gives_way_to_the_one_given(option, budget, size):
    """``selection=freshness selection.limit=2000`` (the README's example) takes the limit; without a
    budget these policies keep half the pool."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        cfg = compose("config", overrides=[f"selection={option}", *budget])["selection"]
    ctx = context_from_intervals([list(range(8)), list(range(8, 11))], stream=toy_stream([11]))
    assert len(instantiate(cfg, _convert_="all").select(ctx).keys) == size
