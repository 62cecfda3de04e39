"""The same checks over every trigger and selection policy that conf/ offers (as river's estimator suite).

Each policy: its YAML instantiates; it is deterministic (fresh instances decide alike); it does not
mutate what it is shown; its docstring carries a runnable example (run by the doctests).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ctsim.cli import CONF_DIR
from ctsim.selection.base import Selection, SelectionContext
from ctsim.stream import toy_stream
from ctsim.triggers.base import TriggerContext

TRIGGERS = sorted((CONF_DIR / "trigger").glob("*.yaml"))
SELECTIONS = sorted((CONF_DIR / "selection").glob("*.yaml"))


def _make(path):
    return instantiate(OmegaConf.load(path), _convert_="all")


def _trigger_decisions(trigger, stream):
    """Replay, recording every context shown and every answer; contexts are checked afterwards."""
    shown, answers, last = [], [], 0
    for batch in stream.batches:
        ctx = TriggerContext(
            batch,
            stream.arrival_order[: batch.stop],
            stream.arrival_order[last : batch.stop],
            sum(a is not None for a in answers),
        )
        before = (ctx.seen.clone(), ctx.since_trigger.clone(), batch.keys.clone())
        answers.append(trigger.observe(ctx))
        shown.append((ctx, before))
        if answers[-1] is not None:
            last = batch.stop
    return answers, shown


def test_every_group_option_is_covered():
    assert {p.stem for p in TRIGGERS} >= {"time", "amount", "always", "never"}
    assert {p.stem for p in SELECTIONS} >= {"new", "all"}


@pytest.mark.parametrize("path", TRIGGERS, ids=lambda p: p.stem)
def test_trigger_conformance(path):
    stream = toy_stream([5, 3, 8, 1, 6, 4], arrival_batch=3, test_fraction=0.2)
    first, shown = _trigger_decisions(_make(path), stream)
    second, _ = _trigger_decisions(_make(path), stream)
    assert first == second
    assert all(a is None or (isinstance(a, str) and a) for a in first)
    for ctx, (seen, since, keys) in shown:
        assert torch.equal(ctx.seen, seen) and torch.equal(ctx.since_trigger, since)
        assert torch.equal(ctx.batch.keys, keys)
    assert ">>>" in inspect.getdoc(type(_make(path)))


@pytest.mark.parametrize("path", SELECTIONS, ids=lambda p: p.stem)
def test_selection_conformance(path):
    intervals = [torch.arange(0, 4), torch.arange(4, 6), torch.arange(6, 11)]

    def ctx(seed=0):
        return SelectionContext(
            torch.cat(intervals), intervals[-1], tuple(intervals[:-1]), torch.Generator().manual_seed(seed)
        )

    shown = ctx()
    kept = (shown.seen.clone(), shown.since_trigger.clone(), [e.clone() for e in shown.earlier])
    a = _make(path).select(shown)
    b = _make(path).select(ctx())
    assert isinstance(a, Selection)
    assert torch.equal(a.keys, b.keys)
    assert a.keys.dtype == torch.long and set(a.keys.tolist()) <= set(range(11))
    assert len(set(a.keys.tolist())) == len(a.keys)  # no key twice
    assert a.weights is None or a.weights.shape == a.keys.shape
    assert torch.equal(shown.seen, kept[0]) and torch.equal(shown.since_trigger, kept[1])
    assert all(torch.equal(x, y) for x, y in zip(shown.earlier, kept[2]))
    assert ">>>" in inspect.getdoc(type(_make(path)))
