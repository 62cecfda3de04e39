"""The benchmark writes its CSV and plot, with figures that add up (no timing asserts)."""

from __future__ import annotations

from functools import partial

import polars as pl
import pytest

from ctsim.bench import main
from ctsim.cost import flops_per_sample
from ctsim.models import ModelSpec, YearbookNet


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    frame = main(
        [
            "--models",
            "1",
            "3",
            "--samples",
            "32",
            "--batch",
            "16",
            "--test",
            "48",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    return frame, out


def test_writes_csv_and_plot(bench):
    frame, out = bench
    assert (out / "engine.png").stat().st_size > 0
    assert pl.read_csv(out / "engine.csv").shape == frame.shape
    assert set(frame.select("engine", "models", "phase").rows()) == {
        (e, m, p) for e in ("batched", "sequential") for m in (1, 3) for p in ("train", "eval")
    }


def test_figures_add_up(bench):
    frame, _ = bench
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
    for models in (1, 3):
        rows = {
            r["engine"]: r
            for r in frame.filter((pl.col("models") == models) & (pl.col("phase") == "train")).iter_rows(
                named=True
            )
        }
        assert rows["sequential"]["speedup_vs_sequential"] == 1.0
        assert rows["batched"]["speedup_vs_sequential"] == pytest.approx(
            rows["batched"]["samples_per_s"] / rows["sequential"]["samples_per_s"]
        )
