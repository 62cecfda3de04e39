"""Identical work is done once: pipelines whose jobs are the same job (same parent, samples, seed and
settings) train one model, and pipelines whose active models are the same embed each batch once.

The population holds two identical drift detectors (and a third that fires at other batches): until
they part, every job and every signal pass of one is also the other's.
"""

from __future__ import annotations

import pytest
import torch

from ctsim.engine.base import digest
from ctsim.simulation import simulate

from .conftest import build, small

VARIANTS = [
    '+population.variants.a=["trigger=drift","trigger.interval=100","trigger/rule=threshold","trigger.rule.value=0.01"]',
    '+population.variants.b=["trigger=drift","trigger.interval=100","trigger/rule=threshold","trigger.rule.value=0.01"]',
    '+population.variants.c=["trigger=drift","trigger.interval=100","trigger/rule=threshold","trigger.rule.value=0"]',
    "population.only=[a,b,c]",
]


class Counting:
    """The run's engine, recording every job it trains and every signal request it answers."""

    def __init__(self, engine):
        self.engine, self.jobs, self.requests = engine, [], []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def train(self, jobs, x, y):
        self.jobs += list(jobs)
        return self.engine.train(jobs, x, y)

    def signals(self, requests, x, y=None):
        self.requests += list(requests)
        return self.engine.signals(requests, x, y)


def _state(state: dict) -> str:
    return digest(*state.values())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharing")
    overrides = small(
        tmp,
        "experiment=portraits_drift",
        "dataset.size=0.05",
        "model=mlp",
        "optimizer.lr=0.05",
        "train.epochs=1",
        "stream.arrival_batch=50",
        "population.seeds=[0]",
        "engine.dtype=float64",
        *VARIANTS,
    )
    found = {}
    for share in (True, False):
        plan = build(overrides)  # fresh triggers: they keep state across a replay
        engine = Counting(plan.engine)
        stream = plan.stream.build(plan.dataset.load())
        found[share] = (simulate(stream, plan.pipelines, engine, progress=False, share=share), engine)
    return found


def test_identical_jobs_train_once(runs):
    (shared, on), (alone, off) = runs[True], runs[False]
    # without sharing, every generation is trained; the distinct ones are the distinct models made
    assert len(off.jobs) == len(alone.generations)
    distinct = {_state(g.trained.state) for g in alone.generations}
    assert len(on.jobs) == len(distinct) < len(off.jobs)
    a, b = (sum(g.pipeline == i for g in shared.generations) for i in (0, 1))
    assert a == b > 1  # the two identical detectors fired together, more than the initial model


def test_identical_signal_passes_are_made_once(runs):
    (_, on), (_, off) = runs[True], runs[False]
    distinct = {(_state(r.state), digest(r.keys)) for r in off.requests}
    assert len(on.requests) == len(distinct) < len(off.requests)


def test_sharing_changes_no_decision_and_no_accuracy(runs):
    shared, alone = runs[True][0], runs[False][0]

    def made(result):
        return [(g.pipeline, g.index, g.batch.index, g.reason) for g in result.generations]

    assert made(shared) == made(alone)
    # the batched engine stacks fewer models when jobs are shared: the same models to float64 rounding
    for g, h in zip(shared.generations, alone.generations):
        torch.testing.assert_close(g.trained.state, h.trained.state, rtol=0, atol=1e-15)
    for name, value in shared.evaluation.metrics.items():
        torch.testing.assert_close(value, alone.evaluation.metrics[name], rtol=0, atol=0, equal_nan=True)
