"""Bounded compilation (``engine.compile=true``): population and batch sizes padded to buckets, a graph
budget per architecture, and never a silent fall back to eager kernels.

The graphs are counted with a backend of our own that runs each traced graph eagerly: what dynamo
compiles is the same as under inductor (one graph per guarded shape), without the tens of seconds per
graph inductor takes on a CPU.
"""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

import ctsim
from ctsim.engine import BatchedEngine, SequentialEngine, TrainConfig, TrainJob, batched, job_seed, stack
from ctsim.engine.optim import SGD
from ctsim.engine.plan import bucket
from ctsim.engine.stack import CompileBudgetError, Compiled
from ctsim.models import MLP, ModelSpec, YearbookNet
from ctsim.validation import ConfigError

MLP_SPEC = ModelSpec(partial(MLP, hidden=[12]), (1, 4, 4), 3)
BN_SPEC = ModelSpec(partial(YearbookNet, channels=3, blocks=2), (1, 8, 8), 3)  # BatchNorm: masked stats


class Counting:
    """A ``torch.compile`` backend that counts the graphs dynamo hands it and runs them eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, inputs: list) -> object:
        self.graphs += 1
        return gm.forward


@pytest.fixture
def counting(monkeypatch):
    torch._dynamo.reset()
    backend = Counting()
    monkeypatch.setattr(stack, "COMPILE_BACKEND", backend)
    yield backend
    torch._dynamo.reset()


def _jobs(spec, sizes, batch=8, epochs=2) -> list[TrainJob]:
    jobs = []
    for m, n in enumerate(sizes):
        keys = torch.randperm(120, generator=torch.Generator().manual_seed(m))[:n]
        train = TrainConfig(epochs=epochs, batch_size=batch)
        jobs.append(TrainJob(m, 0, spec, SGD(lr=0.05, momentum=0.9), train, keys, job_seed(m, 0)))
    return jobs


def _data(spec, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, *spec.input_shape, generator=g, dtype=dtype)
    return x, torch.randint(0, 3, (120,), generator=g)


def test_a_whole_simulation_compiles_at_most_one_graph_per_bucket(counting, monkeypatch, tmp_path):
    """6 pipelines on SEA (time triggers every 1, 2, 3 and 4 slices, amount triggers every 40 and 70
    samples): the jobs due together and the models that still step make calls of 1 to 6 models, and the
    data of a slice is less than a batch. With buckets, a graph per population bucket (2, 3, 4, 6) at one
    batch width and one for a model alone: at most 5. (Before buckets, this run compiled 7 graphs with
    static shapes and 9 with dynamo's default automatic dynamic shapes.) Every graph dynamo compiled is
    one the engine counted: nothing recompiled behind its back."""
    engines = []
    monkeypatch.setattr(batched.BatchedEngine, "__post_init__", _recorded(engines))
    monkeypatch.chdir(tmp_path)
    result = ctsim.run(
        [
            "experiment=quickstart",
            "dataset=sea",
            "model=mlp",
            "dataset.slices=12",
            "dataset.change_points=[4,8]",
            "dataset.size=0.05",
            "train.epochs=1",
            "train.batch_size=32",
            "population.variants.every_5y=['trigger=time','trigger.every=2']",
            "population.variants.never=['trigger=time','trigger.every=3']",
            "+population.variants.t4=['trigger=time','trigger.every=4']",
            "+population.variants.amount=['trigger=amount','trigger.every=40']",
            "+population.variants.amount70=['trigger=amount','trigger.every=70']",
            "engine.compile=true",
            "progress=false",
            "output.plots=false",
        ]
    )
    pipelines = result.cost.height
    assert pipelines == 6 and result.generations.height > 2 * pipelines  # every pipeline retrains
    bound = len({max(2, bucket(n)) for n in range(1, pipelines + 1)}) + 1
    (engine,) = engines
    assert bound == 5 and 0 < counting.graphs == len(engine.graphs) <= bound
    assert {shape[1] for _, shape in engine.graphs if len(shape) == 3} == {32}  # one batch width


def _recorded(engines: list):
    """``BatchedEngine.__post_init__`` that also keeps each engine built (to read its graphs)."""
    init = batched.BatchedEngine.__post_init__

    def post_init(self):
        init(self)
        engines.append(self)

    return post_init


def test_buckets_bound_the_graphs_where_raw_sizes_would_compile_one_each(counting, monkeypatch):
    """6 models, one with less data (30 samples: 4 steps of batch 8, the last one partial; the others 5
    steps): 6 models step, then 5. Padded to the bucket of 6 with a dummy, one graph; unbucketed, two."""
    x, y = _data(MLP_SPEC)
    jobs = _jobs(MLP_SPEC, [40] * 5 + [30], epochs=1)
    engine = BatchedEngine(device="cpu", route="vmap", compile=True)
    engine.train(jobs, x, y)
    assert counting.graphs == len(engine.graphs) == 1

    torch._dynamo.reset()
    counting.graphs = 0
    for module in (stack, batched):
        monkeypatch.setattr(module, "bucket", lambda n: n)
    BatchedEngine(device="cpu", route="vmap", compile=True).train(jobs, x, y)
    assert counting.graphs == 2


@pytest.mark.parametrize("spec", [MLP_SPEC, BN_SPEC], ids=["mlp", "yearbooknet"])
def test_dummy_members_and_padded_batches_change_no_real_model(counting, spec):
    """5 ragged models (padded to 6 with a dummy, then 4 once the shortest has finished; batches of 8
    with partial last ones, and of 6, padded to 8), and one alone (batch 6): compiled, within the
    contract (1e-9 in float64) of the sequential engine, BatchNorm statistics included."""
    x, y = _data(spec, torch.float64)
    jobs = _jobs(spec, [88, 86, 84, 82]) + _jobs(spec, [30], batch=6)
    compiled = BatchedEngine(device="cpu", dtype="float64", route="vmap", compile=True)
    reference = SequentialEngine(device="cpu", dtype="float64")
    for group in (jobs, jobs[-1:]):
        for got, want in zip(compiled.train(group, x, y), reference.train(group, x, y)):
            assert got.steps == want.steps and got.samples == want.samples
            for k, v in want.state.items():
                assert (got.state[k].double() - v.double()).abs().max() <= 1e-9, k
    features = spec.input_shape  # graphs of models × batch × features, and one of a model alone
    expected = [(6, 8, *features), (4, 8, *features), (6, *features)]
    assert sorted(compiled.graphs) == sorted((spec.name, shape) for shape in expected)
    assert counting.graphs == 3


def test_a_shape_beyond_the_budget_stops_the_run_with_one_line_naming_the_architecture(counting, monkeypatch):
    monkeypatch.setattr(stack, "GRAPH_BUDGET", 2)
    x, y = _data(MLP_SPEC)
    engine = BatchedEngine(device="cpu", route="vmap", compile=True)
    engine.train(_jobs(MLP_SPEC, [40, 40]), x, y)
    engine.train(_jobs(MLP_SPEC, [40, 40, 40]), x, y)
    engine.train(_jobs(MLP_SPEC, [40, 40]), x, y)  # a shape compiled before: no new graph
    message = (
        r"^engine.compile=true: MLP would compile a graph for 4 models × batch 8 beyond its budget of 2 "
        r"graphs \(compiled: 2 models × batch 8, 3 models × batch 8\); .*engine.compile=false$"
    )
    with pytest.raises(CompileBudgetError, match=message):
        engine.train(_jobs(MLP_SPEC, [40] * 4), x, y)
    assert counting.graphs == 2


def test_dynamo_recompiling_beyond_the_budget_raises_instead_of_running_eager(counting, monkeypatch):
    """Dynamo's own limit is a backstop: a recompile our shape count does not foresee (here a guard on
    a Python value) cannot exceed the budget and fall back to eager kernels silently."""
    monkeypatch.setattr(stack, "GRAPH_BUDGET", 2)
    factor = [1.0]

    def loss(params, buffers, x, y, w, valid):
        return (x * factor[0]).sum()

    compiled = Compiled(loss, "Toy", stacked=True)
    x = torch.ones(2, 3)
    for value in (1.0, 2.0):
        factor[0] = value
        assert compiled({}, {}, x, None, None, None) == 6 * value
    factor[0] = 3.0
    with pytest.raises(CompileBudgetError, match=r"Toy would compile .* dynamo hit its recompile limit"):
        compiled({}, {}, x, None, None, None)
    assert counting.graphs == 2


def test_a_torch_without_bounded_compilation_is_named_before_any_folder(monkeypatch, tmp_path):
    """On a torch whose ``torch.compile`` takes no per-region recompile limit, ``engine.compile=true``
    stops at start-up with the key and the version, before anything is written."""
    monkeypatch.setattr(stack, "compile_bounded", lambda: False)
    monkeypatch.setattr(batched, "compile_bounded", lambda: False)
    out = tmp_path / "run"
    expected = rf"engine\.compile.*torch {re.escape(torch.__version__)}.*recompile_limit"
    with pytest.raises(ConfigError, match=expected):
        ctsim.run(["dataset=sea", "model=mlp", "engine.compile=true", "progress=false"], out_dir=out)
    assert not out.exists()
