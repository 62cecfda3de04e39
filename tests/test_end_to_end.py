"""A tiny real run, end to end: files, columns, the accuracy matrix and one metric relation."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from ctsim.app.cli import unique_dir
from ctsim.measure.metrics import METRICS_SCHEMA, metrics_table
from ctsim.registry import load, load_many, query, write_new
from ctsim.registry.layout import COST_SCHEMA, EVALS_SCHEMA, GENERATIONS_SCHEMA
from ctsim.reports.summary import console_summary

from .conftest import REPO, build, cli, run, small

TINY = [
    "dataset.size=0.1",
    "optimizer.lr=0.01",
    "train.epochs=2",
    "population.only=[yearly,never]",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    overrides = small(tmp, *TINY, "output.plots=true", "output.checkpoints=last")
    return run(overrides, tmp / "run")


def test_writes_the_documented_files(tiny_run):
    out = tiny_run.out_dir
    for name in ("evals", "generations", "cost", "lineage"):
        assert (out / f"{name}.parquet").is_file()
    assert (out / "summary.md").read_text().startswith("# ctsim run")
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["composite.png", "cost_accuracy.png", "matrix_never_seed0.png", "matrix_yearly_seed0.png"]
    ckpts = sorted(str(p.relative_to(out)) for p in out.rglob("*.pt"))
    assert ckpts == ["checkpoints/never/seed0/gen0000.pt", "checkpoints/yearly/seed0/gen0083.pt"]
    state = torch.load(out / ckpts[1], weights_only=True)
    assert state["head.weight"].shape == (2, 32)


def test_tables_follow_the_documented_schemas(tiny_run):
    tables = {k: v.collect() for k, v in load(tiny_run.out_dir).items()}
    assert tables["evals"].schema == pl.Schema(EVALS_SCHEMA)
    assert tables["generations"].schema == pl.Schema(GENERATIONS_SCHEMA)
    assert tables["cost"].schema == pl.Schema(COST_SCHEMA)
    gens = tables["generations"]
    assert gens.group_by("pipeline").len().sort("pipeline").rows() == [("never", 1), ("yearly", 84)]
    assert tables["evals"].height == 85 * 84 * 3  # generations × slices × metrics
    yearly = gens.filter(pl.col("pipeline") == "yearly").sort("generation")
    assert yearly["trigger_slice"].to_list() == list(range(84))
    assert yearly["parent"].to_list() == [None, *range(83)]
    assert yearly["init"].to_list() == ["scratch"] + ["finetune"] * 83
    assert (yearly["first_slice"] == yearly["last_slice"]).all()  # new data: exactly its own slice
    assert (yearly["samples_trained"] == 2 * yearly["n_selected"]).all()
    assert yearly["checkpoint"].null_count() == 83


def test_lineage_holds_exactly_the_selected_keys(tiny_run):
    result = tiny_run.result
    stream = result.stream
    lineage = load(tiny_run.out_dir)["lineage"].collect()
    row = lineage.filter((pl.col("pipeline") == "yearly") & (pl.col("generation") == 40)).row(0, named=True)
    expected = stream.arrival_order[stream.slice[stream.arrival_order] == 40]
    assert row["keys"] == expected.tolist()
    assert not stream.is_test[torch.tensor(row["keys"])].any()  # never trains on test samples


def test_accuracy_matrix_and_active_models(tiny_run):
    evals = load(tiny_run.out_dir)["evals"].collect()
    acc = evals.filter((pl.col("pipeline") == "yearly") & (pl.col("metric") == "accuracy"))
    matrix = acc.pivot(on="slice", index="generation", values="value").sort("generation")
    assert matrix.shape == (84, 85)
    active = acc.filter(pl.col("active")).sort("slice")
    assert active["slice"].to_list() == list(range(1, 84))  # slice 0 has no model trained before it
    assert (active["generation"] == active["slice"] - 1).all()
    never = evals.filter(
        (pl.col("pipeline") == "never") & pl.col("active") & (pl.col("metric") == "accuracy")
    )
    assert never["generation"].unique().to_list() == [0] and never.height == 83


def test_finetuned_pipeline_beats_never_on_late_slices(tiny_run):
    evals = load(tiny_run.out_dir)["evals"].collect()
    late = (
        evals.filter(pl.col("active") & (pl.col("metric") == "accuracy") & (pl.col("slice") >= 44))
        .group_by("pipeline")
        .agg(((pl.col("value") * pl.col("n")).sum() / pl.col("n").sum()).alias("acc"))
    )
    acc = dict(late.iter_rows())
    assert acc["yearly"] > acc["never"] + 0.1


def test_cost_table_adds_up(tiny_run):
    tables = {k: v.collect() for k, v in load(tiny_run.out_dir).items()}
    cost, gens = tables["cost"], tables["generations"]
    for pipeline in ("yearly", "never"):
        row = cost.filter(pl.col("pipeline") == pipeline).row(0, named=True)
        own = gens.filter(pl.col("pipeline") == pipeline)
        assert row["triggers"] == own.height
        assert row["samples_trained"] == own["samples_trained"].sum()
        assert row["optimizer_steps"] == own["optimizer_steps"].sum()
        assert row["train_flops"] == own["train_flops"].sum() > 0
        assert row["total_s"] == pytest.approx(
            row["trigger_s"] + row["selection_s"] + row["train_s"] + row["eval_s"]
        )
        assert 0 <= row["composite_accuracy"] <= 1
    assert (
        cost.filter(pl.col("pipeline") == "yearly")["eval_flops"].item()
        == 84 * cost.filter(pl.col("pipeline") == "never")["eval_flops"].item()
    )


def test_metrics_table_is_written_and_recomputes_from_evals(tiny_run):
    out = tiny_run.out_dir
    metrics = pl.read_parquet(out / "metrics.parquet")
    tables = {k: v.collect() for k, v in load(out).items()}
    assert metrics.schema == pl.Schema(METRICS_SCHEMA)
    assert metrics.select("pipeline", "seed").rows() == [("yearly", 0), ("never", 0)]  # one per pipeline
    recomputed = metrics_table(tables["evals"], tables["generations"], tiny_run.result.stream.num_classes)
    assert_frame_equal(metrics, recomputed, check_exact=True)
    yearly, never = metrics.rows(named=True)
    # yearly trains once per slice, so slice g's active model is generation g − 1: its FWT is its composite
    # accuracy (slices 1..83) less chance, 1/2
    composite = tables["cost"].filter(pl.col("pipeline") == "yearly")["composite_accuracy"].item()
    assert yearly["fwt"] == pytest.approx(composite - 0.5)
    assert (yearly["eval_fix_split"], yearly["eval_stream_k"]) == (41, 5)  # the middle of 84 slices
    assert never["bwt"] is None and never["fwt"] is None and never["forgetting"] is None  # one generation
    assert "## Continual-learning metrics (mean over seeds)" in (out / "summary.md").read_text()


def test_sql_across_runs(tiny_run, tmp_path):
    tables = load_many(tiny_run.out_dir.parent)
    best = query("SELECT pipeline, composite_accuracy FROM cost ORDER BY composite_accuracy DESC", tables)
    assert best["pipeline"].to_list() == ["yearly", "never"]
    counts = query(
        "SELECT pipeline, COUNT(*) AS n FROM generations GROUP BY pipeline ORDER BY pipeline", tables
    )
    assert counts.rows() == [("never", 1), ("yearly", 84)]
    with pytest.raises(FileNotFoundError, match="no finished ctsim runs"):
        load_many(tmp_path)


def test_a_run_never_overwrites_another_runs_files(tiny_run, tmp_path):
    before = {p: p.read_bytes() for p in tiny_run.out_dir.glob("*.parquet")}
    plan = build(small(tmp_path, *TINY))
    with pytest.raises(FileExistsError, match="never overwrites"):
        from ctsim.app.execute import execute

        execute(plan, tiny_run.out_dir, echo=False)
    assert {p: p.read_bytes() for p in tiny_run.out_dir.glob("*.parquet")} == before
    target = tmp_path / "x.parquet"
    target.write_text("keep")
    with pytest.raises(FileExistsError):
        write_new(target, lambda p: p.write_text("new"))
    assert target.read_text() == "keep"


def test_run_directories_are_claimed_uniquely(tmp_path):
    base = tmp_path / "runs" / "2026-01-01_00-00-00"
    base.mkdir(parents=True)  # another run already has it
    first = unique_dir(str(base))
    assert first == f"{base}_2" and unique_dir(str(base)) == first  # remembered within a process


def test_cli_runs_and_prints_the_summary(tmp_path):
    out = tmp_path / "cli_run"
    result = cli(
        [
            f"hydra.run.dir={out}",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.size=0.02",
            "train.epochs=1",
            "population.only=[every_5y,never]",
            "output.plots=false",
        ],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "ctsim · quickstart" in result.stdout
    assert "every_5y" in result.stdout and "never" in result.stdout
    assert f"results in {out}" in result.stdout
    assert "plots/" not in result.stdout and not (out / "plots").exists()  # output.plots=false: none named
    # every_5y's first model comes after slice 4, never's after slice 0: their means cover other slices
    # one console line for all of them, summary.md one per pipeline
    said = [line for line in result.stdout.splitlines() if line.startswith("  ! ")]
    assert said == [
        "  ! 1 pipeline's accuracy covers fewer slices than the others' (fewest: every_5y, 79 of 83; "
        "no active model before a first generation): compare with care, summary.md lists each"
    ], said
    summary = (out / "summary.md").read_text()
    assert "**Coverage: every_5y: its accuracy covers 79 of the 83 slices" in summary
    assert "never: its accuracy covers" not in summary
    assert (out / "evals.parquet").is_file() and (out / ".hydra" / "config.yaml").is_file()


def test_an_accuracy_of_one_is_shown_as_a_fraction_not_a_count(tiny_run):
    cost = tiny_run.tables["cost"].with_columns(
        composite_accuracy=pl.lit(1.0), composite_accuracy_weighted=pl.lit(1.0)
    )
    text = console_summary("tiny", "header", cost, tiny_run.out_dir, [], 1.0)
    row = next(line for line in text.splitlines() if line.startswith("yearly"))
    assert row.split()[3] == "1.000", row
