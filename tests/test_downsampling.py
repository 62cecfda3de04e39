"""Score-based downsampling (sample-then-batch, batch-then-sample) and RS2: scores, choices, engines.

Every check compares with a direct computation: scores against per-sample formulas and autograd, the
kept samples against a sort of directly computed scores, and the batched engine against the
sequential one (float64, ≤1e-9), per model kind and route.
"""

from __future__ import annotations

from functools import partial

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ctsim.app.cli import CONF_DIR
from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.engine.base import BatchThenSample, EpochSubset, TrainConfig, TrainJob, job_seed
from ctsim.engine.optim import SGD
from ctsim.engine.schedules import Constant
from ctsim.engine.scores import score
from ctsim.measure.cost import flops_per_sample
from ctsim.models import CNN, LSTM, MLP, ModelSpec, YearbookNet
from ctsim.registry import build_tables, load, write_tables
from ctsim.selection import RS2, AllData, NewData, ScoreDownsampler
from ctsim.selection.base import Selection
from ctsim.simulation import Pipeline, simulate
from ctsim.stream import toy_stream
from ctsim.triggers import AmountTrigger, TimeTrigger
from ctsim.validation import ConfigError

from .conftest import build, small

MLP_SPEC = ModelSpec(partial(MLP, hidden=[12]), (1, 4, 4), 3)
KINDS = {
    "mlp": ModelSpec(partial(MLP, hidden=[16]), (1, 6, 6), 3),
    "yearbooknet": ModelSpec(partial(YearbookNet, channels=4), (1, 16, 16), 3),
    "cnn_dropout": ModelSpec(partial(CNN, channels=4, blocks=1, hidden=8, dropout=0.3), (1, 8, 8), 3),
    "lstm": ModelSpec(partial(LSTM, hidden=8), (6, 3), 3),
}


def _data(spec: ModelSpec, n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *spec.input_shape, generator=g, dtype=torch.float64)
    w = torch.randn(x[0].numel(), spec.num_classes, generator=g, dtype=torch.float64)
    return x, (x.flatten(1) @ w).argmax(1)


# -- scores ------------------------------------------------------------------------------------------


def _direct(name: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's score, one at a time, from its textbook definition."""
    out = []
    for zi, yi in zip(z, y):
        p = torch.softmax(zi, 0)
        if name == "loss":
            out.append(F.cross_entropy(zi[None], yi[None]))
        elif name == "least_confidence":
            out.append(1 - p.max())
        elif name == "entropy":
            out.append(-(p * p.log()).sum())
        elif name == "margin":
            first, second = sorted(p.tolist(), reverse=True)[:2]
            out.append(torch.tensor(1 - (first - second), dtype=z.dtype))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["loss", "least_confidence", "entropy", "margin"])
def test_scores_equal_their_per_sample_definitions(name):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 4, generator=g, dtype=torch.float64) * 3
    y = torch.randint(4, (50,), generator=g)
    torch.testing.assert_close(score(name, None, z, y), _direct(name, z, y), rtol=1e-12, atol=1e-12)
    # batched over models: (models, n, classes) gives each model's own scores
    stacked = score(name, None, torch.stack([z, z.flip(0)]), torch.stack([y, y.flip(0)]))
    torch.testing.assert_close(stacked[1], _direct(name, z.flip(0), y.flip(0)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_gradient_norm_equals_autograd_on_the_last_layer(bias):
    model = ModelSpec(partial(MLP, hidden=[7]), (1, 4, 4), 5).build(seed=3, dtype=torch.float64)
    if not bias:
        model.head = torch.nn.Linear(7, 5, bias=False).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(5, (20,), generator=g)
    emb = model.embed(x).detach()
    logits = model.head(emb).detach()
    expected = []
    for i in range(20):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [model.head.weight.grad.flatten()] + ([model.head.bias.grad] if bias else [])
        expected.append(torch.cat(grads).norm())
    torch.testing.assert_close(score("grad_norm", emb, logits, y, bias), torch.stack(expected))


# -- sample-then-batch: the kept samples are exactly the top fraction ----------------------------------


def _pipeline(
    selection, seed=0, trigger=None, epochs=2, init="finetune", spec=MLP_SPEC, name="p"
) -> Pipeline:
    return Pipeline(
        name,
        seed,
        trigger or TimeTrigger(every=1),
        selection,
        spec,
        SGD(lr=0.1, momentum=0.9),
        TrainConfig(epochs=epochs, batch_size=8, init=init),
        Constant(),
    )


@pytest.mark.parametrize("name", ["loss", "grad_norm", "least_confidence", "entropy", "margin"])
@pytest.mark.parametrize("init", ["finetune", "scratch"])
def test_stb_keeps_exactly_the_top_fraction_by_the_model_about_to_be_trained(name, init):
    stream = toy_stream([30, 25, 41], num_classes=3)
    engine = SequentialEngine(device="cpu", dtype="float64")
    down = ScoreDownsampler(name, form="stb", fraction=0.3)
    result = simulate(stream, [_pipeline(NewData(downsample=down), init=init)], engine, progress=False)
    assert len(result.generations) == 3
    for gen in result.generations:
        candidates = stream.arrival_order[stream.slice[stream.arrival_order] == gen.slice]
        if init == "finetune" and gen.index > 0:
            state = result.generations[gen.index - 1].trained.state
        else:
            state = MLP_SPEC.build(seed=job_seed(0, gen.index), dtype=torch.float64).state_dict()
        model = MLP_SPEC.build(dtype=torch.float64)
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            emb = model.embed(stream.x[candidates].double())
            scores = score(name, emb, model.head(emb), stream.y[candidates])
        k = -(-3 * len(candidates) // 10)  # ceil(0.3 n)
        expected = candidates[scores.argsort(descending=True, stable=True)[:k]].sort().values
        assert torch.equal(gen.selection.keys, expected)
        assert gen.selection.scored == len(candidates) and gen.trained.samples == 2 * k


class _SpyEngine(SequentialEngine):
    def __init__(self):
        super().__init__(device="cpu", dtype="float64")
        self.calls: list[list] = []

    def signals(self, requests, x, y=None):
        self.calls.append(list(requests))
        return super().signals(requests, x, y)


def test_one_engine_call_scores_every_due_pipeline_and_equal_candidates_share_a_pass():
    stream = toy_stream([20, 20, 20], num_classes=3)
    pipelines = [
        _pipeline(NewData(downsample=ScoreDownsampler("loss", fraction=0.5)), seed=0),
        _pipeline(NewData(downsample=ScoreDownsampler("entropy", fraction=0.5)), seed=1),
        _pipeline(AllData(downsample=ScoreDownsampler("margin", fraction=0.5)), seed=2),
        _pipeline(NewData(), seed=3),
    ]
    engine = _SpyEngine()
    simulate(stream, pipelines, engine, progress=False)
    assert len(engine.calls) == 3  # one call per decision point, for all scoring pipelines together
    for requests in engine.calls[1:]:  # new data (pipelines 0, 1) shares one keys object; all data its own
        assert len(requests) == 3 and requests[0].keys is requests[1].keys is not requests[2].keys


def test_stb_cost_is_reported_in_the_selection_phase():
    stream = toy_stream([30, 30], num_classes=3, test_fraction=0.2)
    pipelines = [
        _pipeline(NewData(downsample=ScoreDownsampler("loss", fraction=0.5))),
        _pipeline(NewData(downsample=ScoreDownsampler("entropy", form="bts", fraction=0.5))),
        _pipeline(NewData()),
    ]
    result = simulate(stream, pipelines, SequentialEngine(device="cpu"), progress=False)
    tables = build_tables(result)
    gens, cost = tables["generations"], tables["cost"]
    eval_flops = flops_per_sample(MLP_SPEC).eval
    assert gens["selection_flops"].to_list() == [s * eval_flops for s in gens["scored"].to_list()]
    stb, bts, plain = (cost.row(i, named=True) for i in range(3))
    assert stb["selection_flops"] == 48 * eval_flops  # 24 + 24 candidates scored once
    assert bts["selection_flops"] == 2 * 48 * eval_flops  # every training batch scored, 2 epochs
    assert plain["selection_flops"] == 0
    assert stb["samples_trained"] == bts["samples_trained"] == plain["samples_trained"] // 2
    assert stb["selection_s"] > plain["selection_s"]


# -- batch-then-sample and RS2 in the engines ------------------------------------------------------------


def test_bts_trains_each_step_on_the_top_scoring_part_of_its_batch():
    """One step over one batch: the same as a plain step on the top-k samples, computed directly."""
    spec = KINDS["mlp"]
    x, y = _data(spec)
    parent = spec.build(seed=5, dtype=torch.float64).state_dict()
    keys = torch.arange(40)
    train = TrainConfig(epochs=1, batch_size=40)
    bts = TrainJob(
        0, 1, spec, SGD(lr=0.5), train, keys, 7, parent, None, Constant(), BatchThenSample("loss", 0.25)
    )
    model = spec.build(dtype=torch.float64)
    model.load_state_dict(parent)
    model.eval()
    with torch.no_grad():
        losses = F.cross_entropy(model(x[keys]), y[keys], reduction="none")
    top = keys[losses.argsort(descending=True, stable=True)[:10]]
    plain = TrainJob(0, 1, spec, SGD(lr=0.5), train, top, 7, parent)
    for engine in (
        SequentialEngine(device="cpu", dtype="float64"),
        BatchedEngine(device="cpu", dtype="float64"),
    ):
        got, want = engine.train([bts, plain], x, y)
        assert got.samples == want.samples == 10 and got.scored == 40 and got.steps == 1
        for k in want.state:
            torch.testing.assert_close(got.state[k], want.state[k], rtol=0, atol=1e-12)


def _downsampled_jobs(spec: ModelSpec) -> list[TrainJob]:
    parent = spec.build(seed=99, dtype=torch.float64).state_dict()
    settings = [
        dict(batch_then_sample=BatchThenSample("loss", 0.5)),
        dict(batch_then_sample=BatchThenSample("loss", 0.5), weights=True),
        dict(batch_then_sample=BatchThenSample("entropy", 0.25)),
        dict(batch_then_sample=BatchThenSample("grad_norm", 0.5)),
        dict(epoch_subset=EpochSubset(0.4)),
        dict(epoch_subset=EpochSubset(0.3, replacement=True)),
        dict(),
    ]
    jobs = []
    for m, s in enumerate(settings):
        n = 90 + 17 * m
        keys = torch.randperm(300, generator=torch.Generator().manual_seed(m))[:n]
        weights = (
            torch.rand(n, generator=torch.Generator().manual_seed(50 + m)) + 0.5
            if s.pop("weights", 0)
            else None
        )
        jobs.append(
            TrainJob(
                m,
                1,
                spec,
                SGD(lr=0.05, momentum=0.9) if m % 2 else SGD(lr=0.1),  # Adam: the engine tests
                TrainConfig(epochs=3, batch_size=12 + 2 * (m % 3)),
                keys,
                job_seed(m, 1),
                parent if m % 3 else None,
                weights,
                Constant(),
                **s,
            )
        )
    return jobs


@pytest.mark.parametrize("route", ["vmap", "loop"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_batched_equals_sequential_with_downsampling(kind, route):
    spec = KINDS[kind]
    x, y = _data(spec)
    jobs = _downsampled_jobs(spec)
    seq = SequentialEngine(device="cpu", dtype="float64").train(jobs, x, y)
    bat = BatchedEngine(device="cpu", dtype="float64", route=route).train(jobs, x, y)
    for job, s, b in zip(jobs, seq, bat):
        assert s.status == b.status == "ok"
        assert s.steps == b.steps == job.steps() and s.samples == b.samples == sum(job.step_sizes())
        assert s.scored == b.scored == (job.epoch_size() * 3 if job.batch_then_sample else 0)
        for k in s.state:
            assert (b.state[k] - s.state[k]).abs().max().item() <= 1e-9, f"{kind} job {job.pipeline} {k}"
        assert b.loss == pytest.approx(s.loss, rel=1e-9)


def test_rs2_draws_fresh_subsets_each_epoch():
    keys = torch.arange(10)
    without = TrainJob(0, 0, None, None, TrainConfig(epochs=5), keys, 3, epoch_subset=EpochSubset(0.4))
    orders = without.epoch_orders()
    assert [len(o) for o in orders] == [4] * 5 and all(len(set(o.tolist())) == 4 for o in orders)
    # without replacement: the first 10 draws cover every sample once (two full epochs and half a third)
    assert sorted(torch.cat(orders)[:10].tolist()) == list(range(10))
    assert without.steps() == 5 * 1 and without.epoch_size() == 4
    counts = torch.zeros(10)
    for seed in range(400):
        job = TrainJob(
            0, 0, None, None, TrainConfig(epochs=1), keys, seed, epoch_subset=EpochSubset(0.3, True)
        )
        counts[job.epoch_orders()[0]] += 1
    assert counts.sum() == 1200 and counts.min() > 80 and counts.max() < 160  # uniform: 120 each


# -- through the loop and the command line ---------------------------------------------------------


def _population(stream, engine, seed=0):
    pipelines = [  # named apart, as a run's variants are: the tables are keyed by pipeline and seed
        _pipeline(NewData(downsample=ScoreDownsampler("loss", fraction=0.5)), seed, name="loss"),
        _pipeline(NewData(downsample=ScoreDownsampler("margin", form="bts", fraction=0.5)), seed, name="bts"),
        _pipeline(AllData(downsample=RS2(fraction=0.5)), seed, init="scratch", name="rs2"),
        _pipeline(NewData(downsample=ScoreDownsampler("entropy", draw="proportional", weights=True)), seed),
    ]
    return build_tables(simulate(stream, pipelines, engine, progress=False))


def test_populations_with_downsampling_give_identical_evals_on_both_engines():
    stream = toy_stream([40, 35, 50, 30], num_classes=3, test_fraction=0.25)
    seq = _population(stream, SequentialEngine(device="cpu", dtype="float64"))
    bat = _population(stream, BatchedEngine(device="cpu", dtype="float64"))
    assert seq["evals"].equals(bat["evals"])
    assert seq["lineage"].equals(bat["lineage"])


def test_downsampling_is_deterministic_per_seed_and_differs_across_seeds():
    stream = toy_stream([40, 35, 50, 30], num_classes=3, test_fraction=0.25)
    engine = SequentialEngine(device="cpu")
    a, b, c = (_population(stream, engine, seed)["lineage"] for seed in (0, 0, 1))
    assert a.equals(b)
    assert not a.filter(pl.col("generation") > 0)["keys"].equals(c.filter(pl.col("generation") > 0)["keys"])


class _EmptyOnSecond:
    """A user's policy that sometimes chooses nothing."""

    def __init__(self):
        self.calls = 0

    def select(self, ctx):
        self.calls += 1
        return Selection(ctx.since_trigger[:0] if self.calls == 2 else ctx.since_trigger.clone())


class _NoEmptyJobs(SequentialEngine):
    def train(self, jobs, x, y):
        assert all(len(j.keys) for j in jobs), "an empty selection reached the engine"
        return super().train(jobs, x, y)


def test_an_empty_selection_is_recorded_as_skipped_and_never_reaches_the_engine():
    stream = toy_stream([20, 20, 20], test_fraction=0.2)
    pipeline = _pipeline(_EmptyOnSecond(), trigger=AmountTrigger(every=16))
    result = simulate(stream, [pipeline], _NoEmptyJobs(device="cpu"), progress=False)
    tables = build_tables(result)
    skipped = tables["skipped"]
    assert skipped.height == 1 and skipped["trigger_batch"].to_list() == [1]
    assert "chose no samples" in skipped["why"][0] and skipped["trigger_reason"][0]
    assert tables["cost"]["skipped"].to_list() == [1]
    assert tables["generations"].height == 2  # the two triggers that trained


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["selection/downsample=loss", "selection.downsample.fraction=0"],
            "fraction=0: expected a number in",
        ),
        (
            ["selection/downsample=rs2", "selection.downsample.fraction=1.5"],
            "fraction=1.5: expected a number",
        ),
        (["selection/downsample=loss", "selection.downsample.score=los"], "score='los': expected one of"),
        (["selection/downsample=loss", "selection.downsample.form=sbt"], "form='sbt': expected one of"),
        (
            [
                "selection/downsample=loss",
                "selection.downsample.form=bts",
                "selection.downsample.fraction=0.01",
            ],
            "keeps at least one sample of a batch of train.batch_size=64",
        ),
        (["selection=uniform", "selection.fraction=0"], "selection.fraction=0: expected"),
        (["selection=reservoir", "selection.size=0"], "selection.size=0"),
        (["selection=new", "selection.limit=-3"], "selection.limit=-3: expected"),
    ],
)
def test_bad_selection_settings_are_named_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build(small(tmp_path, "population.variants={}", *overrides))
    assert not (tmp_path / "datasets").exists()  # no data was generated


DOWNSAMPLERS = sorted((CONF_DIR / "selection" / "downsample").glob("*.yaml"))


@pytest.mark.parametrize("path", DOWNSAMPLERS, ids=lambda p: p.stem)
def test_every_downsampler_option_composes_and_trains_on_its_fraction(path):
    """``selection/downsample=<option>`` as a user writes it: every option keeps its fraction."""
    overrides = [
        "selection=window",
        f"selection/downsample={path.stem}",
        "selection.downsample.fraction=0.25",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        cfg = compose("config", overrides=overrides)
    selection = instantiate(cfg.selection, _convert_="all")
    assert type(selection).__name__ == "Window" and selection.downsample.fraction == 0.25
    stream = toy_stream([40, 40, 40], num_classes=3)
    result = simulate(stream, [_pipeline(selection)], SequentialEngine(device="cpu"), progress=False)
    # 40 new samples a slice, batches of 8: every form trains on 10 a slice per epoch (2 epochs)
    assert [g.trained.samples for g in result.generations] == [20, 40, 60]
    assert sum(g.selection.scored + g.trained.scored for g in result.generations) > 0 or path.stem == "rs2"


def test_runs_from_before_skipped_parquet_still_load(tmp_path):
    stream = toy_stream([20, 20], test_fraction=0.2)
    tables = build_tables(
        simulate(stream, [_pipeline(NewData())], SequentialEngine(device="cpu"), progress=False)
    )
    write_tables({k: v for k, v in tables.items() if k != "skipped"}, tmp_path)
    loaded = load(tmp_path)
    assert loaded["skipped"].collect().height == 0 and loaded["cost"].collect().height == 1
    assert loaded["skipped"].collect().schema == tables["skipped"].schema
    (tmp_path / "cost.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing cost\.parquet"):
        load(tmp_path)


def test_a_diverging_bts_job_counts_only_the_steps_it_kept_on_both_engines():
    spec = KINDS["mlp"]
    x, y = _data(spec)
    job = TrainJob(
        0, 0, spec, SGD(lr=1e30), TrainConfig(epochs=3, batch_size=16), torch.arange(64), 3,
        batch_then_sample=BatchThenSample("loss", 0.5),
    )  # fmt: skip
    seq, bat = (
        e.train([job], x, y)[0] for e in (SequentialEngine(device="cpu"), BatchedEngine(device="cpu"))
    )
    assert seq.status == bat.status == "nonfinite"
    assert seq.steps == bat.steps < job.steps()
    assert seq.scored == bat.scored == 16 * seq.steps and seq.samples == bat.samples == 8 * seq.steps
