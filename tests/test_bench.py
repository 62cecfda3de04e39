"""The benchmark writes every case's CSV and the plot, with figures that add up (no timing asserts)."""

from __future__ import annotations

from functools import partial

import polars as pl
import pytest

from ctsim.app.bench import KINDS, PORTRAITS_TEST, main
from ctsim.measure.cost import flops_per_sample
from ctsim.models import ModelSpec, YearbookNet

ENGINES = {"batched/vmap", "batched/loop", "sequential"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["--models", "1", "3", "--samples", "32", "--batch", "16", "--test", "48", "--device", "cpu"]
    ragged = ["--ragged-models", "3", "--ragged-model", "mlp", "--ragged-epochs", "1"]
    frames = main([*args, "--route-models", "2", "--eval-models", "2", *ragged, "--out", str(out)])
    return frames, out


def test_writes_every_case_and_the_plot(bench):
    frames, out = bench
    assert (out / "engine.png").stat().st_size > 0
    for case in ("populations", "routes", "launch", "small_mlps", "eval", "ragged"):
        assert pl.read_csv(out / f"{case}.csv").shape == frames[case].shape, case
    assert set(frames["populations"].select("engine", "models", "phase").rows()) == {
        (e, m, p) for e in ENGINES for m in (1, 3) for p in ("train", "eval")
    }
    assert set(frames["routes"].select("case", "engine").rows()) == {
        (f"routes/{k}", e) for k in KINDS for e in ENGINES
    }
    assert set(frames["small_mlps"]["engine"]) == ENGINES | {"torch.optim param groups"}


def test_figures_add_up(bench):
    frames, _ = bench
    frame = frames["populations"]
    flops = flops_per_sample(ModelSpec(partial(YearbookNet), (1, 32, 32), 2))
    for row in frame.iter_rows(named=True):
        per = 32 if row["phase"] == "train" else 48
        assert row["samples"] == row["models"] * per
        assert row["samples_per_s"] == pytest.approx(row["samples"] / row["seconds"])
        assert row["flops"] == row["samples"] * (flops.train if row["phase"] == "train" else flops.eval)
        assert row["peak_fraction"] is None  # no known fp32 peak for a CPU
    train = frame.filter(pl.col("phase") == "train")
    assert (train["model_steps_per_s"] * train["seconds"]).round(6).to_list() == [
        float(m * 2) for m in train["models"]
    ]  # 32 samples in batches of 16: 2 steps per model
    assert (train["ms_per_step"] * 2 / 1e3).to_list() == pytest.approx(train["seconds"].to_list())
    for (case, models, phase), rows in frame.group_by("case", "models", "phase"):
        by = {r["engine"]: r for r in rows.iter_rows(named=True)}
        assert by["sequential"]["speedup_vs_sequential"] == 1.0, (case, models, phase)
        for r in by.values():
            assert r["speedup_vs_sequential"] == pytest.approx(
                r["samples_per_s"] / by["sequential"]["samples_per_s"]
            )


def test_small_mlps_is_fifty_steps_of_thirty_two_models(bench):
    frames, _ = bench
    for row in frames["small_mlps"].iter_rows(named=True):
        assert row["models"] == 32 and row["samples"] == 32 * 64 * 50
        assert row["ms_per_step"] == pytest.approx(row["seconds"] * 1e3 / 50)


def test_eval_case_predicts_portraits_size_test_data(bench):
    frames, _ = bench
    for row in frames["eval"].iter_rows(named=True):
        assert row["phase"] == "eval" and row["samples"] == 2 * PORTRAITS_TEST


def test_ragged_case_pads_to_one_call_per_step_where_splitting_takes_several(bench):
    frames, _ = bench
    by = {r["engine"]: r for r in frames["ragged"].iter_rows(named=True)}
    assert set(by) == {"sequential", "batched/vmap pad", "batched/vmap split"}
    assert by["batched/vmap pad"]["calls_per_step"] == 1.0 < by["batched/vmap split"]["calls_per_step"]
    assert by["batched/vmap pad"]["max_syncs_per_step"] <= 1 and by["sequential"]["calls_per_step"] is None
    # sizes 40, 80 and 206 of the trigger study in batches of 16, one epoch: 13 steps for the longest
    assert by["sequential"]["group_steps"] == 13 and by["sequential"]["samples"] == 40 + 80 + 206
    assert by["sequential"]["speedup_vs_sequential"] == pytest.approx(1.0)  # a median over itself


def test_compile_case_gives_compile_seconds_and_speed_per_bucket(tmp_path):
    """``--cases compile`` (traced by dynamo, run eagerly: inductor takes minutes on a CPU): one graph
    per population bucket, 3 models padded to the bucket of 3, 5 to that of 6."""
    args = ["--cases", "compile", "--compile-backend", "eager", "--compile-model", "mlp", "--device", "cpu"]
    frames = main(
        [*args, "--compile-models", "1", "5", "--samples", "40", "--batch", "16", "--out", str(tmp_path)]
    )
    frame = pl.read_csv(tmp_path / "compile.csv")
    assert frame.shape == frames["compile"].shape
    rows = {(r["engine"], r["models"]): r for r in frame.iter_rows(named=True)}
    assert set(rows) == {(e, m) for e in ("batched/vmap", "batched/vmap+compile") for m in (1, 5)}
    for models, bucket in ((1, 1), (5, 6)):
        compiled, eager = rows["batched/vmap+compile", models], rows["batched/vmap", models]
        assert compiled["graphs"] == 1 and compiled["bucket"] == bucket and eager["graphs"] == 0
        assert compiled["backend"] == "eager" and compiled["compile_s"] > 0 == eager["compile_s"]
        assert compiled["speedup_vs_eager"] == pytest.approx(eager["seconds"] / compiled["seconds"])
        # 40 samples cut to whole batches of 16: 2 steps per model
        assert compiled["model_steps_per_s"] * compiled["seconds"] == pytest.approx(2 * models)
