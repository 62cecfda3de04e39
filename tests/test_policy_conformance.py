"""The same checks over every trigger and selection policy that conf/ offers (as river's estimator suite).

Each policy: its YAML instantiates; its class keeps the declared contract (``trigger_problems``,
``selection_problems``: the checks a user's policy gets at start-up); it is deterministic (fresh
instances decide alike); it does not mutate what it is shown; its docstring carries a runnable example
(run by the doctests).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from functools import partial

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ctsim.selection
import ctsim.triggers
from ctsim.app.cli import CONF_DIR
from ctsim.engine import SequentialEngine
from ctsim.models import MLP, ModelSpec
from ctsim.selection.base import (
    Presampler,
    Selection,
    SelectionContext,
    SelectionPolicy,
    context_from_intervals,
    selection_problems,
)
from ctsim.selection.downsample import Downsampled
from ctsim.stream import toy_stream
from ctsim.triggers.base import (
    ChecksStream,
    DecidesTogether,
    Trained,
    Trigger,
    TriggerContext,
    WantsSignals,
    gather,
    trigger_problems,
    wants_of,
)

TRIGGERS = sorted((CONF_DIR / "trigger").glob("*.yaml"))
SELECTIONS = sorted(p for p in (CONF_DIR / "selection").glob("*.yaml") if not p.stem.startswith("_"))


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
    assert isinstance(trigger, Trigger) and trigger_problems(type(trigger)) == []
    for member in getattr(trigger, "members", {}).values():  # an ensemble's members are triggers too
        assert isinstance(member, Trigger) and trigger_problems(type(member)) == []


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
    policy = make()
    assert ">>>" in inspect.getdoc(type(policy))
    assert isinstance(policy, SelectionPolicy) and selection_problems(type(policy)) == []
    assert isinstance(policy, Downsampled) and policy.downsample is None  # the YAMLs' default


def _exported(package, role):
    return [
        getattr(package, name)
        for name in package.__all__
        if inspect.isclass(getattr(package, name))
        and issubclass(getattr(package, name), role)
        and not getattr(getattr(package, name), "_is_protocol", False)  # the contract itself
    ]


@pytest.mark.parametrize("cls", _exported(ctsim.triggers, Trigger), ids=lambda c: c.__name__)
def test_every_exported_trigger_keeps_the_declared_contract(cls):
    """Each trigger class ``ctsim.triggers`` exports, and each optional hook it has is a declared one."""
    assert trigger_problems(cls) == []
    hooks = {"wants": WantsSignals, "problems": ChecksStream, "observe_many": DecidesTogether}
    for name, protocol in hooks.items():
        assert (name in dir(cls)) == issubclass(cls, protocol)


@pytest.mark.parametrize(
    "cls",
    [c for c in _exported(ctsim.selection, object) if issubclass(c, Presampler) and c is not Presampler],
    ids=lambda c: c.__name__,
)
def test_every_exported_presampler_keeps_the_declared_contract(cls):
    assert selection_problems(cls) == []
    assert "pool" in vars(cls)  # its own pool, not the base's abstract one


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
