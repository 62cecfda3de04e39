"""Populations end to end: many pipelines in one run, both engines, and a diverging member."""

from __future__ import annotations

import polars as pl
import pytest

from .conftest import run, small

# Six variants that differ in trigger, selection, learning rate, optimizer, schedule and epochs (each
# sets its own: a run override of a key a variant sets is an error).
VARIANTS = [
    '+population.variants.time2=["trigger=time","trigger.every=2","optimizer.lr=0.01","train.epochs=2"]',
    '+population.variants.amount=["trigger=amount","trigger.every=120","optimizer.lr=0.03","train.epochs=1"]',
    '+population.variants.adam=["trigger=time","trigger.every=5","optimizer=adam","optimizer.lr=0.002",'
    '"train.epochs=1"]',
    '+population.variants.static=["trigger=never","train.epochs=1"]',
    '+population.variants.adamw=["trigger=time","trigger.every=3","optimizer=adamw","schedule=cosine",'
    '"train.epochs=3"]',
    '+population.variants.tail=["trigger=time","trigger.every=4","selection.tail=2","optimizer.lr=0.005",'
    '"train.batch_size=32","train.epochs=1"]',
    "population.only=[time2,amount,adam,static,adamw,tail]",
]
SMALL = ["dataset.size=0.02", "model.channels=4", "output.checkpoints=none"]


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engines")
    common = small(tmp, *SMALL, *VARIANTS, "population.seeds=[0,1]", "engine.dtype=float64")
    batched = run([*common, "engine=batched"], tmp / "batched")
    sequential = run([*common, "engine=sequential"], tmp / "sequential")
    return batched.tables, sequential.tables


def test_population_of_twelve_pipelines_is_labelled_in_every_table(both_engines):
    tables, _ = both_engines
    expected = {(v, s) for v in ("time2", "amount", "adam", "static", "adamw", "tail") for s in (0, 1)}
    for name in ("evals", "generations", "cost", "lineage"):
        assert set(tables[name].select("pipeline", "seed").unique().rows()) == expected, name
    assert tables["cost"].height == 12


def test_batched_and_sequential_give_identical_accuracy_values(both_engines):
    batched, sequential = both_engines
    keys = ["pipeline", "seed", "generation", "slice", "metric"]
    a, b = batched["evals"].sort(keys), sequential["evals"].sort(keys)
    assert a.height == b.height > 1000
    assert a.select(keys).equals(b.select(keys))
    assert a["value"].equals(b["value"])  # identical, not close
    gen_cols = [
        "pipeline",
        "seed",
        "generation",
        "parent",
        "trigger_batch",
        "n_selected",
        "samples_trained",
        "optimizer_steps",
        "train_flops",
        "status",
    ]
    g_keys = ["pipeline", "seed", "generation"]
    assert (
        batched["generations"]
        .sort(g_keys)
        .select(gen_cols)
        .equals(sequential["generations"].sort(g_keys).select(gen_cols))
    )
    assert batched["cost"]["engine"].unique().to_list() == ["batched"]
    assert sequential["cost"]["engine"].unique().to_list() == ["sequential"]


def test_seeds_change_results_and_variants_differ(both_engines):
    tables, _ = both_engines
    cost = tables["cost"]
    by = {(r["pipeline"], r["seed"]): r for r in cost.iter_rows(named=True)}
    assert by[("time2", 0)]["composite_accuracy"] != by[("time2", 1)]["composite_accuracy"]
    assert by[("static", 0)]["triggers"] == 1
    assert by[("time2", 0)]["triggers"] == 42 and by[("adam", 0)]["triggers"] == 16
    adamw = tables["generations"].filter((pl.col("pipeline") == "adamw") & (pl.col("seed") == 0))
    assert by[("adamw", 0)]["samples_trained"] == 3 * adamw["n_selected"].sum()  # its 3 epochs


@pytest.fixture(scope="module")
def with_and_without_a_diverging_member(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nan")
    base = small(tmp, "dataset.size=0.05", "train.epochs=1", "output.checkpoints=none")
    healthy = [
        '+population.variants.slow=["trigger=time","trigger.every=4","optimizer.lr=0.005"]',
        '+population.variants.fast=["trigger=time","trigger.every=4","optimizer.lr=0.02"]',
    ]
    bad = '+population.variants.boom=["trigger=time","trigger.every=4","optimizer.lr=1e10"]'
    with_bad = run([*base, *healthy, bad, "population.only=[slow,boom,fast]"], tmp / "with")
    without = run([*base, *healthy, "population.only=[slow,fast]"], tmp / "without")
    return with_bad, without


def test_a_diverging_pipeline_is_flagged(with_and_without_a_diverging_member):
    with_bad, _ = with_and_without_a_diverging_member
    gens = with_bad.tables["generations"]
    boom = gens.filter(pl.col("pipeline") == "boom")
    assert (boom["status"] == "nonfinite").any()
    assert (gens.filter(pl.col("pipeline") != "boom")["status"] == "ok").all()
    cost = with_bad.tables["cost"].filter(pl.col("pipeline") == "boom").row(0, named=True)
    assert cost["nonfinite_generations"] == int((boom["status"] == "nonfinite").sum()) > 0
    assert "**Non-finite:** boom (seed 0)" in (with_bad.out_dir / "summary.md").read_text()
    assert "! boom:" in with_bad.summary
    # its frozen models are still finite and evaluated; AUROC, which ranks their outputs, is null where
    # those are not finite (a model with lr 1e10 gives NaN logits from finite weights)
    evals = with_bad.tables["evals"].filter(pl.col("pipeline") == "boom", pl.col("metric") != "auroc")
    assert evals["value"].null_count() == 0


def test_the_other_pipelines_are_bit_identical_to_a_run_without_it(with_and_without_a_diverging_member):
    with_bad, without = with_and_without_a_diverging_member
    keys = ["pipeline", "seed", "generation", "slice", "metric"]
    a = with_bad.tables["evals"].filter(pl.col("pipeline") != "boom").sort(keys)
    b = without.tables["evals"].sort(keys)
    assert a.select(*keys, "value").equals(b.select(*keys, "value"))
    states_a = {
        (with_bad.result.pipelines[g.pipeline].name, g.index): g.trained.state
        for g in with_bad.result.generations
        if with_bad.result.pipelines[g.pipeline].name != "boom"
    }
    states_b = {
        (without.result.pipelines[g.pipeline].name, g.index): g.trained.state
        for g in without.result.generations
    }
    assert states_a.keys() == states_b.keys()
    for key, state in states_a.items():
        assert all((state[k] == states_b[key][k]).all() for k in state), key
