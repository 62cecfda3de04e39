"""Continual-learning metrics (ctsim.measure.metrics) against hand-computed matrices, and the table."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from ctsim.measure.metrics import (
    DEFAULT_K,
    METRICS_SCHEMA,
    bwt,
    eval_fix,
    eval_stream,
    forgetting,
    fwt,
    metrics_table,
)
from ctsim.measure.quality import QUALITY_SCHEMA
from ctsim.registry import load, write_tables
from ctsim.registry.layout import (
    COST_SCHEMA,
    EVALS_SCHEMA,
    GENERATIONS_SCHEMA,
    LINEAGE_SCHEMA,
)
from ctsim.reports.summary import metrics_markdown

NAN = math.nan

# 4 generations × 5 slices; slice 2 has no test data. Generations 1 and 2 were both trained through
# slice 1 (two triggers in one slice); no generation was trained through slice 2 or 4.
R = torch.tensor(
    [
        [0.90, 0.60, NAN, 0.40, 0.30],
        [0.80, 0.85, NAN, 0.50, 0.45],
        [0.70, 0.90, NAN, 0.55, 0.50],
        [0.75, 0.80, NAN, 0.95, 0.70],
    ],
    dtype=torch.float64,
)
TRAINED = [0, 1, 1, 3]


def test_bwt_is_the_last_generation_on_each_earlier_ones_slice_minus_its_own():
    # g=0: R[3,0] − R[0,0] = 0.75 − 0.90 = −0.15
    # g=1: R[3,1] − R[1,1] = 0.80 − 0.85 = −0.05
    # g=2: R[3,1] − R[2,1] = 0.80 − 0.90 = −0.10    mean −0.30 / 3 = −0.10
    assert bwt(R, TRAINED) == pytest.approx(-0.10)


def test_fwt_is_the_predecessor_on_the_new_slice_above_the_baseline():
    # g=1: R[0,1] − 0.5 = 0.10;  g=2: R[1,1] − 0.5 = 0.35;  g=3: R[2,3] − 0.5 = 0.05    mean 0.50 / 3
    assert fwt(R, TRAINED, [0.5] * 5) == pytest.approx(0.5 / 3)
    # a per-slice baseline is read at each generation's own slice: 0.10 + 0.35 + (0.55 − 0.25) = 0.75
    assert fwt(R, TRAINED, torch.tensor([0.5, 0.5, 0.5, 0.25, 0.5])) == pytest.approx(0.75 / 3)


def test_forgetting_counts_each_trained_slice_once():
    # slices trained by g < 3: {0, 1} (slice 1 twice, counted once)
    # j=0: max(0.90, 0.80, 0.70) − 0.75 = 0.15;  j=1: max(0.60, 0.85, 0.90) − 0.80 = 0.10    mean 0.125
    assert forgetting(R, TRAINED) == pytest.approx(0.125)


def test_eval_fix_takes_the_latest_generation_trained_by_the_split():
    # default split: 5 // 2 − 1 = 1; the latest generation trained through a slice ≤ 1 is 2
    # ID: (R[2,0] + R[2,1]) / 2 = (0.70 + 0.90) / 2 = 0.80; OOD: slices 3, 4 (2 has no data): 0.55, 0.50
    fix = eval_fix(R, TRAINED)
    assert (fix.split, fix.generation) == (1, 2)
    assert (fix.id, fix.ood, fix.worst) == pytest.approx((0.80, 0.525, 0.50))
    # split 3: generation 3; ID (0.75 + 0.80 + 0.95) / 3; OOD slice 4 alone: 0.70
    fix = eval_fix(R, TRAINED, split=3)
    assert fix.generation == 3
    assert (fix.id, fix.ood, fix.worst) == pytest.approx((2.5 / 3, 0.70, 0.70))
    # split 0: generation 0; OOD 0.60, 0.40, 0.30
    fix = eval_fix(R, TRAINED, split=0)
    assert (fix.generation, fix.id, fix.worst) == (0, 0.90, 0.30)
    assert fix.ood == pytest.approx(1.3 / 3)


def test_eval_fix_without_a_model_by_the_split_is_undefined():
    fix = eval_fix(R[2:], [3, 3], split=1)
    assert fix.generation is None and all(math.isnan(v) for v in (fix.id, fix.ood, fix.worst))


def test_eval_stream_averages_the_next_k_slices_that_have_data():
    # k=2: g0 (own slice 0): slices 1, 2 → 0.60 (2 has no data);  g1 (1): slices 2, 3 → 0.50
    #      g2 (1): slices 2, 3 → 0.55;  g3 (3): slice 4 (5 is past the end) → 0.70    mean 2.35 / 4
    assert eval_stream(R, TRAINED, k=2) == pytest.approx(2.35 / 4)
    # k=1: g1 and g2 see only slice 2, which has no data: left out;  (0.60 + 0.70) / 2
    assert eval_stream(R, TRAINED, k=1) == pytest.approx(0.65)
    # a generation trained on the last slice has nothing ahead: left out
    assert math.isnan(eval_stream(R[:1], [4], k=3))


def test_one_generation_has_no_transfer_nor_forgetting():
    one, trained = R[:1], [0]
    assert all(math.isnan(f(one, trained)) for f in (bwt, forgetting))
    assert math.isnan(fwt(one, trained, [0.5] * 5))
    assert eval_stream(one, trained, k=1) == pytest.approx(0.60)
    fix = eval_fix(one, trained)
    assert (fix.generation, fix.id) == (0, pytest.approx(0.75))  # (0.90 + 0.60) / 2


def test_nan_cells_are_left_out_of_each_mean():
    holes = R.clone()
    holes[0, 0] = NAN  # g=0's own cell: bwt keeps g=1 and g=2 only: (−0.05 − 0.10) / 2
    assert bwt(holes, TRAINED) == pytest.approx(-0.075)
    # forgetting on slice 0: the best of the others, 0.80 − 0.75 = 0.05;  (0.05 + 0.10) / 2
    assert forgetting(holes, TRAINED) == pytest.approx(0.075)
    holes[:3, 0] = NAN  # no earlier generation scored on slice 0: only slice 1 counts
    assert forgetting(holes, TRAINED) == pytest.approx(0.10)
    # every own cell empty: nothing to average
    assert math.isnan(bwt(torch.full((2, 2), NAN, dtype=torch.float64), [0, 1]))


@pytest.mark.parametrize("split", [-1, 4, 5, 1.0, True, "1"])
def test_eval_fix_refuses_a_split_out_of_range(split):
    with pytest.raises(ValueError, match=r"Invalid split: .*must be an integer in 0\.\.3 \(default 1"):
        eval_fix(R, TRAINED, split)


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_eval_stream_refuses_k_below_one(k):
    with pytest.raises(ValueError, match=r"Invalid k: .*needs k ≥ 1"):
        eval_stream(R, TRAINED, k)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="one trained slice per generation"):
        bwt(R, [0, 1])
    with pytest.raises(ValueError, match=r"one value per slice, \(5,\)"):
        fwt(R, TRAINED, [0.5, 0.5])


def frames(matrices: dict[tuple[str, int], tuple[torch.Tensor, list[int]]]) -> tuple[pl.DataFrame, ...]:
    """evals and generations rows of the given (pipeline, seed) → (R, trained), as a run writes them.
    Generation numbers start at 10, and each matrix's macro-F1 rows hold 1 − R (to be ignored)."""
    evals, gens = [], []
    for (pipeline, seed), (m, trained) in matrices.items():
        for g, t in enumerate(trained):
            gens.append({"pipeline": pipeline, "seed": seed, "generation": 10 + g, "trigger_slice": t})
            for metric, values in (("macro_f1", 1 - m[g]), ("accuracy", m[g])):
                evals += [
                    {
                        "pipeline": pipeline,
                        "seed": seed,
                        "generation": 10 + g,
                        "slice": s,
                        "slice_label": f"t{s}",
                        "metric": metric,
                        "value": None if math.isnan(v) else v,
                        "n": 0 if math.isnan(v) else 10,
                        "active": False,
                    }
                    for s, v in enumerate(values.tolist())
                ]
    generations = pl.DataFrame(gens, schema={k: GENERATIONS_SCHEMA[k] for k in gens[0]})
    return pl.DataFrame(evals, schema=EVALS_SCHEMA), generations.with_columns(status=pl.lit("ok"))


def test_metrics_table_holds_the_functions_values_per_pipeline_and_seed():
    other = R.flip(0).clone()
    given = {("b", 0): (R, TRAINED), ("a", 0): (other, [0, 0, 2, 4]), ("b", 1): (R[:1], [0])}
    evals, gens = frames(given)
    table = metrics_table(evals, gens.reverse().sort("pipeline", "seed", maintain_order=True), num_classes=4)
    assert table.schema == pl.Schema(METRICS_SCHEMA)
    assert table.select("pipeline", "seed").rows() == [("a", 0), ("b", 0), ("b", 1)]
    for row in table.iter_rows(named=True):
        m, trained = given[row["pipeline"], row["seed"]]
        fix = eval_fix(m, trained)
        expected = {
            "bwt": bwt(m, trained),
            "fwt": fwt(m, trained, [0.25] * 5),  # chance level, 1 / num_classes
            "forgetting": forgetting(m, trained),
            "eval_fix_split": 1,
            "eval_fix_id": fix.id,
            "eval_fix_ood": fix.ood,
            "eval_fix_worst": fix.worst,
            "eval_stream_k": DEFAULT_K,
            "eval_stream": eval_stream(m, trained, DEFAULT_K),
        }
        for column, value in expected.items():  # NaN in the functions is null in the table
            assert row[column] == (None if value != value else pytest.approx(value)), column
    b0 = table.row(1, named=True)
    assert (b0["bwt"], b0["forgetting"]) == (pytest.approx(-0.10), pytest.approx(0.125))


def test_metrics_table_takes_split_and_k():
    evals, gens = frames({("a", 0): (R, TRAINED)})
    row = metrics_table(evals, gens, num_classes=2, split=3, k=1).row(0, named=True)
    assert (row["eval_fix_split"], row["eval_stream_k"]) == (3, 1)
    assert (row["eval_fix_id"], row["eval_stream"]) == (pytest.approx(2.5 / 3), pytest.approx(0.65))
    with pytest.raises(ValueError, match="Invalid split: 4"):
        metrics_table(evals, gens, num_classes=2, split=4)
    with pytest.raises(ValueError, match="Invalid k: 0"):
        metrics_table(evals, gens, num_classes=2, k=0)


def test_metrics_table_is_null_where_undefined():
    evals, gens = frames({("a", 0): (R, TRAINED), ("b", 0): (R[:1], [0])})
    status = pl.when(pl.col("pipeline") == "a").then(pl.lit("nonfinite")).otherwise(pl.lit("ok"))
    table = metrics_table(evals, gens.with_columns(status=status), num_classes=2)
    a, b = table.rows(named=True)
    floats = [c for c, t in METRICS_SCHEMA.items() if t == pl.Float64]
    assert all(a[c] is None for c in floats)  # every generation non-finite: as in cost, nothing to show
    assert b["bwt"] is None and b["fwt"] is None and b["forgetting"] is None and b["eval_fix_id"] is not None
    # a stream of one slice has no Eval-Fix split
    one = frames({("c", 0): (R[:, :1], [0, 0, 0, 0])})
    row = metrics_table(*one, num_classes=2).row(0, named=True)
    assert row["eval_fix_split"] is None and row["eval_fix_id"] is None


def test_summary_section_shows_the_mean_over_seeds():
    metrics = pl.DataFrame(
        {"pipeline": ["a", "a"], "seed": [0, 1], "bwt": [-0.1, -0.2], "eval_fix_split": [1, 1]},
        schema_overrides={"seed": pl.Int64},
    ).with_columns(
        pl.lit(0.5).alias(c) for c in ("fwt", "forgetting", "eval_fix_id", "eval_fix_ood", "eval_fix_worst")
    )
    metrics = metrics.with_columns(eval_stream_k=pl.lit(5, pl.Int64), eval_stream=pl.lit(None, pl.Float64))
    text = "\n".join(metrics_markdown(metrics.select(list(METRICS_SCHEMA))))
    assert "## Continual-learning metrics (mean over seeds)" in text
    assert "| a | 2 | -0.150 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | – |" in text
    assert "model as of slice 1" in text and "next 5 slices" in text


def test_runs_from_before_the_metrics_table_read_it_as_empty(tmp_path):
    schemas = {
        "evals": EVALS_SCHEMA,
        "generations": GENERATIONS_SCHEMA,
        "cost": COST_SCHEMA,
        "lineage": LINEAGE_SCHEMA,
        "quality": QUALITY_SCHEMA,
    }
    write_tables({t: pl.DataFrame(schema=s) for t, s in schemas.items()}, tmp_path)
    metrics = load(tmp_path)["metrics"].collect()
    assert_frame_equal(metrics, pl.DataFrame(schema=METRICS_SCHEMA))
