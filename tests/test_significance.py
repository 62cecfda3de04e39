"""Significance groups in a comparison: pipelines that differ only by noise are grouped, pipelines that
truly differ are not. The runs are written with the registry's own writers (status.json and the
tables), with accuracies drawn so that the truth is known; the comparison is made as a user makes it,
with ``ctsim compare`` (its ``main``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import polars as pl
import pytest
import torch

from ctsim.reports.compare import main
from ctsim.reports.significance import groups, holm

from .conftest import write_finished_run

SLICES = 40


def accuracies(generator: torch.Generator, mean: float, seeds: int, seed_sd: float, slice_sd: float):
    """(seeds, slices) composite accuracies: a pipeline's true mean, each seed's training luck (shared
    by all the slices its models serve) and each slice's evaluation noise."""
    luck = torch.randn(seeds, 1, generator=generator, dtype=torch.float64) * seed_sd
    noise = torch.randn(seeds, SLICES, generator=generator, dtype=torch.float64) * slice_sd
    return (mean + luck + noise).clamp(0, 1)


def write_run(
    folder, pipelines: dict[str, torch.Tensor], name: str = "synthetic", overrides: Sequence[str] = ()
) -> None:
    """A finished run folder holding ``pipelines`` (name → (seeds, slices) accuracies): each seed has one
    generation, trained through slice 0, active on every later slice. ``name`` and ``overrides``: the
    run's, as its status.json records them."""
    evals, gens, cost = [], [], []
    for pipeline, acc in pipelines.items():
        for seed, row in enumerate(acc.tolist()):
            evals += [
                dict(pipeline=pipeline, seed=seed, generation=0, slice=s, slice_label=str(s),
                     metric="accuracy", value=v, n=50, active=s > 0)
                for s, v in enumerate(row)
            ]  # fmt: skip
            gens.append(dict(pipeline=pipeline, seed=seed, generation=0, trigger_batch=0, trigger_slice=0))
            cost.append(
                dict(pipeline=pipeline, seed=seed, triggers=1, samples_trained=100, optimizer_steps=2,
                     train_flops=10**9, eval_flops=0, selection_flops=0, skipped=0, trigger_s=0.0,
                     selection_s=0.0, train_s=1.0, eval_s=0.1, total_s=1.1,
                     composite_accuracy=sum(row[1:]) / (SLICES - 1), covered_slices=SLICES - 1,
                     nonfinite_generations=0)
            )  # fmt: skip
    config = {"run": {"dataset": {"_target_": "ctsim.datasets.SEA"}, "name": name}}
    write_finished_run(folder, evals, gens, cost, config, overrides)


def compared(tmp_path, pipelines, capsys) -> tuple[pl.DataFrame, str, str]:
    write_run(tmp_path / "run", pipelines)
    out = tmp_path / "comparison"
    assert main([str(tmp_path / "run"), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    table = pl.read_parquet(out / "compare.parquet")
    return table, (out / "compare.md").read_text(), console


def group_of(table: pl.DataFrame) -> dict[str, int]:
    return dict(zip(table["pipeline"], table["group"]))


@pytest.mark.parametrize("seeds", [3, 1])  # 3 seeds: paired t over seeds; 1 seed: Wilcoxon over slices
def test_noise_is_grouped_with_the_best_and_a_true_difference_is_not(tmp_path, capsys, seeds):
    """One fixed draw (the next test checks the rates over many)."""
    g = torch.Generator().manual_seed(0)
    luck = 0.01 if seeds > 1 else 0.0
    pipelines = {
        "twin_a": accuracies(g, 0.80, seeds, luck, 0.05),
        "twin_b": accuracies(g, 0.80, seeds, luck, 0.05),  # the same policy: only noise apart
        "worse": accuracies(g, 0.72, seeds, luck, 0.05),  # truly 8 points below
    }
    table, md, console = compared(tmp_path, pipelines, capsys)
    assert group_of(table) == {"twin_a": 1, "twin_b": 1, "worse": 2}
    rows = {r["pipeline"]: r for r in table.iter_rows(named=True)}
    best = "twin_a" if rows["twin_a"]["test"] == "best" else "twin_b"
    twin = "twin_b" if best == "twin_a" else "twin_a"
    assert rows[twin]["p_vs_best"] > 0.05 and rows["worse"]["p_vs_best"] <= 0.05
    assert rows[twin]["test"] == (
        "paired t, 3 seeds" if seeds == 3 else f"Wilcoxon, {SLICES - 1} slices × 1 seed(s)"
    )
    assert table["pipeline"].to_list()[-1] == "worse"  # sorted by group, then accuracy
    assert f"1 pipeline(s) cannot be told from it: {twin}" in md
    assert "group 1 " in console and "group 2 " in console


def test_a_pipeline_that_covers_fewer_slices_is_named_in_compare_md_and_report(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    late = accuracies(g, 0.8, 2, 0.0, 0.05)
    write_run(tmp_path / "run", {"early": accuracies(g, 0.8, 2, 0.0, 0.05), "late": late})
    cost = pl.read_parquet(tmp_path / "run" / "cost.parquet")
    (tmp_path / "run" / "cost.parquet").unlink()
    cost = cost.with_columns(
        pl.when(pl.col("pipeline") == "late")
        .then(20)
        .otherwise(pl.col("covered_slices"))
        .alias("covered_slices")
    )
    cost.write_parquet(tmp_path / "run" / "cost.parquet")
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "c")]) == 0
    said = "late: its accuracy covers 20 of the 39 slices others cover"
    assert said in (tmp_path / "c" / "compare.md").read_text()
    assert said in (tmp_path / "c" / "report.html").read_text()
    assert said in capsys.readouterr().out


def _frame(pipelines: dict[str, torch.Tensor]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            dict(
                pipeline=name,
                seed=seed,
                generation=0,
                slice=s,
                metric="accuracy",
                value=v,
                n=50,
                active=s > 0,
            )
            for name, acc in pipelines.items()
            for seed, row in enumerate(acc.tolist())
            for s, v in enumerate(row)
        ]
    )


@pytest.mark.parametrize("seeds, luck, delta", [(3, 0.01, 0.08), (1, 0.0, 0.05)])
def test_noise_is_split_off_at_most_about_alpha_of_the_time(seeds, luck, delta):
    """200 comparisons of two pipelines that differ only by noise: the tests call them apart in about 5%
    (11 of 200 in this draw; a binomial count above 16 would happen in under 5% of draws at α 0.05); a
    true difference of ``delta`` is called in most (3 seeds: a t-test with 2 degrees of freedom has
    little power)."""
    g = torch.Generator().manual_seed(7)
    apart = found = 0
    for _ in range(200):
        a, b = accuracies(g, 0.8, seeds, luck, 0.05), accuracies(g, 0.8, seeds, luck, 0.05)
        worse = accuracies(g, 0.8 - delta, seeds, luck, 0.05)
        mean = {"a": float(a[:, 1:].mean()), "b": float(b[:, 1:].mean())}
        apart += groups(_frame({"a": a, "b": b}), mean)["group"].n_unique() > 1
        found += (
            groups(_frame({"a": a, "w": worse}), {"a": mean["a"], "w": float(worse[:, 1:].mean())})[
                "group"
            ].n_unique()
            > 1
        )
    assert apart <= 16
    assert found >= 170


def test_holm_matches_its_definition():
    p = [0.01, 0.2, 0.03, 0.005]
    # sorted: 0.005×4, 0.01×3, 0.03×2, 0.2×1, each at least the one before
    assert holm(p) == pytest.approx([0.03, 0.2, 0.06, 0.02])


def test_a_run_summary_groups_its_pipelines_when_given_the_evaluations(tmp_path):
    from ctsim.reports.summary import markdown_summary

    g = torch.Generator().manual_seed(0)
    pipelines = {"twin_a": accuracies(g, 0.8, 1, 0.0, 0.05), "twin_b": accuracies(g, 0.8, 1, 0.0, 0.05)}
    pipelines["worse"] = accuracies(g, 0.72, 1, 0.0, 0.05)
    write_run(tmp_path / "run", pipelines)
    t = {name: pl.read_parquet(tmp_path / "run" / f"{name}.parquet") for name in ("evals", "cost", "quality")}
    args = (
        "run",
        "header",
        "cmd",
        [],
        {"run": {}, "variants": {}},
        t["cost"],
        t["quality"],
        [],
        [],
        [],
        tmp_path,
    )
    plain = markdown_summary(*args)
    grouped = markdown_summary(*args, evals=t["evals"])
    assert "| group |" not in plain and "Significance" not in plain
    rows = {line.split(" | ")[0].strip("| "): line for line in grouped.splitlines() if line.startswith("| ")}
    assert rows["twin_a"].split(" | ")[4] == "1" and rows["twin_b"].split(" | ")[4] == "1"
    assert rows["worse"].split(" | ")[4] == "2"
    assert "cannot be told from it" in grouped


def test_a_bad_alpha_is_refused_before_anything_is_written(tmp_path, capsys):
    write_run(tmp_path / "run", {"a": accuracies(torch.Generator().manual_seed(0), 0.8, 1, 0.0, 0.05)})
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "c"), "--alpha", "1.5"]) == 2
    assert "--alpha 1.5: expected a number between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _interval_cells(md: str, html: str, console: str) -> dict[str, list[tuple[float, float]]]:
    """Each pipeline's 95% interval as compare.md, report.html and the console show it."""
    shown: dict[str, list[tuple[float, float]]] = {}
    bounds = r"(-?\d+\.\d+) – (-?\d+\.\d+)"
    head = next(line for line in md.splitlines() if line.startswith("| pipeline |"))
    column = [c.strip() for c in head.split("|")].index("95% CI")
    for line in md.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("| ") and (m := re.fullmatch(bounds, cells[column])):
            shown.setdefault(cells[1], []).append((float(m[1]), float(m[2])))
    for row in re.findall(r"<tr(?: class=\"best-group\")?>(.*?)</tr>", html):
        tds = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if len(tds) > 3 and (m := re.fullmatch(bounds, tds[3])):
            shown.setdefault(tds[0], []).append((float(m[1]), float(m[2])))
    for m in re.finditer(r"group \S+\s+(\S+)\s+seeds \d+\s+accuracy \S+ \[" + bounds + r"\]", console):
        shown.setdefault(m[1], []).append((float(m[2]), float(m[3])))
    return shown


def test_two_seeds_far_apart_show_their_interval_within_0_and_1_and_say_it_tells_nothing(tmp_path, capsys):
    """``wide`` has two seeds 0.2 apart: its 95% t interval (1 degree of freedom, the mean ± 12.7
    standard errors) runs from below 0 to above 1. compare.md, report.html and the console show it cut
    to [0, 1] and name it as an interval that tells nothing; compare.parquet keeps the t interval, and
    the groups and p-values are the paired tests', worked out here by hand."""
    from scipy import stats

    from ctsim.reports.plots import _interval

    g = torch.Generator().manual_seed(0)
    wide = torch.cat([accuracies(g, 0.95, 1, 0.0, 0.02), accuracies(g, 0.75, 1, 0.0, 0.02)])
    pipelines = {"wide": wide, "steady": accuracies(g, 0.6, 2, 0.0, 0.02)}
    pipelines["three"] = accuracies(g, 0.6, 3, 0.0, 0.02)  # 3 seeds: an interval that informs
    table, md, console = compared(tmp_path, pipelines, capsys)
    html = (tmp_path / "comparison" / "report.html").read_text()
    rows = {r["pipeline"]: r for r in table.iter_rows(named=True)}

    # compare.parquet: the statistics as computed, the t interval whole
    composite = wide[:, 1:].mean(1).tolist()
    mean, sd = sum(composite) / 2, abs(composite[0] - composite[1]) / math.sqrt(2)
    half = stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
    assert rows["wide"]["accuracy"] == pytest.approx(mean, abs=1e-12)
    assert rows["wide"]["accuracy_sd"] == pytest.approx(sd, abs=1e-12)
    assert rows["wide"]["ci_low"] == pytest.approx(mean - half, abs=1e-12) and mean - half < 0
    assert rows["wide"]["ci_high"] == pytest.approx(mean + half, abs=1e-12) and mean + half > 1
    # the verdicts: Wilcoxon over the slices of the 2 shared seeds against the best, Holm-corrected
    best = wide[:, 1:].mean(0)
    raw = {
        p: stats.wilcoxon((best - pipelines[p][:2, 1:].mean(0)).tolist()).pvalue for p in ("steady", "three")
    }
    assert rows["wide"]["test"] == "best" and rows["wide"]["group"] == 1
    for p, adjusted in zip(raw, holm(list(raw.values()))):
        assert rows[p]["p_vs_best"] == pytest.approx(adjusted, rel=1e-9)
        assert rows[p]["group"] == (1 if adjusted > 0.05 else 2)
        assert rows[p]["test"] == f"Wilcoxon, {SLICES - 1} slices × 2 seed(s)"

    # what a user reads: every interval within [0, 1], the wide one cut at both ends, in all three places
    shown = _interval_cells(md, html, console)
    assert sorted(shown) == ["steady", "three", "wide"] and all(len(v) == 3 for v in shown.values())
    assert all(0 <= low <= high <= 1 for v in shown.values() for low, high in v)
    assert shown["wide"] == [(0.0, 1.0)] * 3
    for p in ("steady", "three"):  # inside [0, 1]: shown as computed
        assert shown[p] == [(round(rows[p]["ci_low"], 4), round(rows[p]["ci_high"], 4))] * 3
    below, above = _interval(table)  # the error bars of accuracy_triggers.png and pareto.png
    for row, down, up in zip(table.iter_rows(named=True), below, above):
        assert row["accuracy"] - down >= 0 and row["accuracy"] + up <= 1
    assert (below[0], above[0]) == pytest.approx((mean, 1 - mean))  # wide: cut at both ends
    # and said plainly: the 2-seed intervals tell nothing, the one with 3 seeds is not named
    for text in (md, html, console):
        said = next(line for line in text.splitlines() if "Intervals that tell nothing" in line)
        assert "wide (2 seeds; its t interval" in said and "steady (2 seeds)" in said
        assert "three" not in said
