"""The hindsight-optimal schedule: the DP equals brute force; the CLI writes frontier, regrets, plot."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import polars as pl
import pytest
import torch

from ctsim.evaluation import active_generations, composite
from ctsim.reports.oracle import best_schedules, main, schedule_accuracy

from .conftest import REPO, run, small


def _brute(matrix, trained, n, k, first=None):
    best = -math.inf
    for chosen in itertools.combinations(range(matrix.shape[0]), k):
        if first is not None and chosen[0] != first:
            continue
        active = active_generations([trained[g] for g in chosen], matrix.shape[1])
        value = composite(matrix[list(chosen)], active, n).mean
        if not math.isnan(value):
            best = max(best, value)
    return best


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    num, slices = int(torch.randint(2, 8, (1,), generator=g)), int(torch.randint(3, 10, (1,), generator=g))
    matrix = torch.rand(num, slices, generator=g, dtype=torch.float64)
    matrix[torch.rand(num, slices, generator=g) < 0.1] = math.nan  # a generation without a value there
    trained = sorted(torch.randint(0, slices, (num,), generator=g).tolist())  # repeated slices too
    n = torch.randint(0, 4, (slices,), generator=g)  # slices without test samples too
    return matrix, trained, n


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("first", [None, 0])
def test_the_dynamic_programme_equals_brute_force(seed, first):
    matrix, trained, n = _case(seed)
    for k, found in enumerate(best_schedules(matrix, trained, n, first=first), start=1):
        want = _brute(matrix, trained, n, k, first)
        assert len(found.chosen) == k and (first is None or found.chosen[0] == first)
        assert found.accuracy == pytest.approx(
            schedule_accuracy(matrix, trained, n, found.chosen), abs=1e-12, nan_ok=True
        )
        if want == -math.inf:
            assert math.isnan(found.accuracy)
        else:
            assert found.accuracy == pytest.approx(want, abs=1e-12), (k, found.chosen)


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oracle")
    variants = [
        '+population.variants.yearly=["trigger=time","trigger.every=1"]',
        '+population.variants.five=["trigger=time","trigger.every=5"]',
        '+population.variants.never=["trigger=never"]',
        "population.only=[yearly,five,never]",
    ]
    overrides = small(
        tmp, "dataset.size=0.02", "model=mlp", "train.epochs=1", "population.seeds=[0,1]", *variants
    )
    return run(overrides, tmp / "run")


def _oracle(*args):
    return subprocess.run(
        [sys.executable, "-m", "ctsim", "oracle", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_writes_frontier_regrets_and_plot(drift_run):
    done = _oracle(drift_run.out_dir)
    assert done.returncode == 0, done.stderr
    out = drift_run.out_dir / "oracle"
    assert {p.name for p in out.iterdir()} == {
        "frontier.parquet",
        "regret.parquet",
        "frontier.png",
        "oracle.md",
    }
    front, regret = pl.read_parquet(out / "frontier.parquet"), pl.read_parquet(out / "regret.parquet")
    assert set(front["candidates"]) == {"yearly"}  # found: the variant that trains at every slice
    for seed in (0, 1):
        acc = front.filter(pl.col("seed") == seed).sort("k")["accuracy"].to_list()
        assert len(acc) == 84 and all(b >= a for a, b in itertools.pairwise(acc))  # at most k: never worse
    cost = drift_run.tables["cost"]
    yearly = regret.filter(pl.col("pipeline") == "yearly").join(cost, on=["pipeline", "seed"])
    # the candidates' own schedule is one of those searched: never above the frontier
    assert (yearly["regret"] >= -1e-12).all()
    exact = front.filter(pl.col("k") == 84).join(cost.filter(pl.col("pipeline") == "yearly"), on="seed")
    assert exact["exact_accuracy"].to_list() == pytest.approx(
        exact["composite_accuracy"].to_list(), abs=1e-12
    )
    # `never` trains the candidates' first model (same slice, seed and generation): regret exactly 0
    assert regret.filter(pl.col("pipeline") == "never")["regret"].to_list() == pytest.approx(
        [0.0, 0.0], abs=1e-12
    )
    assert "frontier" in (out / "oracle.md").read_text()
    # `five` first trains at slice 4, so its accuracy covers slices 5…: it is measured against schedules
    # that start there too, and the candidates at its own trigger slices are one of them
    from ctsim.metrics import pipeline_matrix

    gens = drift_run.tables["generations"]
    for seed in (0, 1):
        row = regret.filter((pl.col("pipeline") == "five") & (pl.col("seed") == seed)).row(0, named=True)
        assert row["first_slice"] == 4
        matrix, trained = pipeline_matrix(drift_run.tables["evals"], gens, "yearly", seed)
        own = gens.filter((pl.col("pipeline") == "five") & (pl.col("seed") == seed))[
            "trigger_slice"
        ].to_list()
        rows = [trained.index(t) for t in own]
        n = torch.tensor(
            drift_run.tables["evals"]
            .filter(pl.col("generation") == 0)
            .group_by("slice")
            .agg(pl.col("n").first())
            .sort("slice")["n"]
            .to_list()
        )
        same_schedule = schedule_accuracy(matrix, trained, n, rows)
        assert row["frontier_accuracy"] >= same_schedule - 1e-12
        assert row["triggers"] == len(own)


def _main(capsys, *args) -> tuple[int, str]:
    """``ctsim oracle ARGS`` in this process (its start-up is what a subprocess costs)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_the_cli_refuses_what_it_cannot_use(drift_run, tmp_path, capsys):
    code, err = _main(capsys, tmp_path)
    assert code == 2 and "not a finished ctsim run: missing evals.parquet" in err
    code, err = _main(capsys, drift_run.out_dir, "--candidates", "yearlyy", "--out", tmp_path / "o1")
    assert (
        code == 2 and "--candidates yearlyy: no such variant in this run; it has yearly, never, five" in err
    )
    code, _ = _main(capsys, drift_run.out_dir, "--candidates", "five", "--out", tmp_path / "o2")
    assert code == 0  # named candidates are used as they are
    kept = (tmp_path / "o2" / "oracle.md").read_text()
    code, err = _main(capsys, drift_run.out_dir, "--out", tmp_path / "o2")
    assert code == 2 and "never overwrites" in err
    assert (tmp_path / "o2" / "oracle.md").read_text() == kept


def test_a_run_without_candidates_is_named(tmp_path, capsys):
    overrides = small(
        tmp_path, "dataset.size=0.02", "model=mlp", "train.epochs=1", "population.only=[never,every_5y]"
    )
    out = run(overrides, tmp_path / "r")
    code, err = _main(capsys, out.out_dir)
    assert code == 2
    assert "no variant has a generation at every slice" in err and "trigger=always" in err
