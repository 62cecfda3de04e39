"""The hindsight-optimal schedule: the DP equals brute force; the CLI writes frontier, regrets, plot."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys

import polars as pl
import pytest
import torch

from ctsim.measure.evaluation import active_generations, composite
from ctsim.reports.oracle import best_schedules, main, schedule_accuracy

from .conftest import REPO, run, small, write_finished_run


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
    from ctsim.measure.metrics import pipeline_matrix

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


# -- exactness: every real schedule against the frontier's account of it ------------------------------


class AtSlices:
    """A trigger that fires at the end of the slices named in ``at`` (``"s0s2s4"``): a fixed schedule."""

    def __init__(self, at: str = "s0"):
        self.at = {int(s) for s in re.findall(r"\d+", at)}

    def observe(self, ctx) -> str | None:
        if ctx.batch.end_of_slice and ctx.batch.slice in self.at:
            return f"at: end of slice {ctx.batch.slice}"
        return None


class SeedFree(torch.nn.Module):
    """A linear classifier that starts from zeros whatever its seed: trained full-batch, the model it
    becomes depends on its training data alone (the data order within the one batch aside)."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = torch.nn.Linear(math.prod(input_shape), num_classes)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(x.flatten(1))


SLICES = 6
SCHEDULES = [  # every schedule that starts with the initial model (slice 0); the last slice serves none
    (0, *rest) for r in range(SLICES - 1) for rest in itertools.combinations(range(1, SLICES - 1), r)
]


@pytest.fixture(scope="module")
def every_schedule(tmp_path_factory):
    """One run: candidates trained from scratch on all data at every slice, and every schedule of the
    same recipe as its own pipeline."""
    root = tmp_path_factory.mktemp("brute")
    (root / "configs" / "trigger").mkdir(parents=True)
    (root / "configs" / "model").mkdir()
    (root / "configs" / "trigger" / "at.yaml").write_text(f"_target_: {__name__}.AtSlices\nat: s0\n")
    (root / "configs" / "model" / "seedfree.yaml").write_text(
        f"_target_: {__name__}.SeedFree\n_partial_: true\n"
    )
    variants = ['+population.variants.candidates=["trigger=time","trigger.every=1"]']
    for schedule in SCHEDULES:
        at = "".join(f"s{x}" for x in schedule)
        variants.append(
            f'+population.variants.at_{"_".join(map(str, schedule))}=["trigger=at","trigger.at={at}"]'
        )
    overrides = small(
        root,
        f"hydra.searchpath=[file://{root / 'configs'}]",
        *variants,
        f"population.only=[candidates,{','.join('at_' + '_'.join(map(str, s)) for s in SCHEDULES)}]",
        "dataset=sea",
        f"dataset.slices={SLICES}",
        "dataset.change_points=[3]",
        "dataset.per_slice=200",
        "model=seedfree",
        "selection=all",
        "train.init=scratch",
        "train.epochs=3",
        "train.batch_size=100000",
        "optimizer.lr=0.5",
        "engine=sequential",
        "engine.dtype=float64",
    )
    return run(overrides, root / "run")


def test_scratch_candidates_on_all_data_make_the_frontier_exact(every_schedule, tmp_path):
    """Brute force over every schedule, each trained for real: the frontier is exact."""
    from ctsim.measure.metrics import pipeline_matrix
    from ctsim.reports.compare import compare

    out, comparison, table = compare([every_schedule.out_dir], tmp_path / "c")
    # the first of the two pipelines that train at slices 0-4 (the last slice serves none), both exact
    assert comparison.candidates == "candidates" and comparison.oracle == "exact"
    evals, gens, cost = (every_schedule.tables[t] for t in ("evals", "generations", "cost"))
    matrix, trained = pipeline_matrix(evals, gens, "candidates", 0)
    n = torch.tensor(
        evals.filter(pl.col("pipeline") == "candidates")
        .group_by("slice")
        .agg(pl.col("n").first())
        .sort("slice")["n"]
    )
    real = {}
    for schedule in SCHEDULES:
        name = "at_" + "_".join(map(str, schedule))
        row = cost.filter(pl.col("pipeline") == name).row(0, named=True)
        assert row["triggers"] == len(schedule)
        # the schedule's own models are the candidates trained at its slices
        assert row["composite_accuracy"] == pytest.approx(
            schedule_accuracy(matrix, trained, n, [trained.index(s) for s in schedule]), abs=1e-9
        )
        real[schedule] = row["composite_accuracy"]
    front = comparison.frontier.sort("k")
    assert (front["oracle"] == "exact").all()
    for k, accuracy in zip(front["k"], front["accuracy"]):
        best_real = max(a for s, a in real.items() if len(s) <= k)
        assert accuracy == pytest.approx(best_real, abs=1e-9), k
    regret = table.filter(pl.col("pipeline").str.starts_with("at_"))["regret"]
    assert regret.min() == pytest.approx(0.0, abs=1e-9)  # the best schedule of each size is on the frontier
    text = (out / "compare.md").read_text()
    assert "regret (exact)" in text and "The frontier is exact" in text and "approximate" not in text


def write_matrix_run(
    folder, pipelines: dict[str, tuple[list[int], list[list[float]]]], finetuned: bool, seed: int = 0
) -> None:
    """A finished run folder (the registry's writers) of one seed per pipeline: name → (the slices its
    generations were trained through, its generation × slice accuracy matrix)."""
    evals, gens, cost = [], [], []
    for name, (trained, matrix) in pipelines.items():
        slices = len(matrix[0])
        active = active_generations(trained, slices)
        for g, t in enumerate(trained):
            parent = g - 1 if finetuned and g else None
            gens.append(
                dict(pipeline=name, seed=seed, generation=g, parent=parent, trigger_slice=t, trigger_batch=t)
            )
            evals += [
                dict(pipeline=name, seed=seed, generation=g, slice=s, slice_label=str(s), metric="accuracy",
                     value=matrix[g][s], n=10, active=active[s] == g)
                for s in range(slices)
            ]  # fmt: skip
        served = [matrix[a][s] for s, a in enumerate(active) if a is not None]
        cost.append(
            dict(pipeline=name, seed=seed, triggers=len(trained), train_flops=0, selection_flops=0,
                 trigger_s=0.0, selection_s=0.0, train_s=1.0, composite_accuracy=sum(served) / len(served),
                 covered_slices=len(served))
        )  # fmt: skip
    selection = {"_target_": "ctsim.selection.NewData"}
    config = {"run": {"dataset": {"_target_": "ctsim.datasets.SEA"}, "name": "m", "selection": selection}}
    write_finished_run(folder, evals, gens, cost, config)


def test_a_pipeline_above_an_approximate_frontier_is_named_and_every_label_says_approximate(tmp_path, capsys):
    """Fine-tuned candidates: the frontier is approximate in every output, and the pipeline above it is
    named with the reason (as a user reads it: ``ctsim compare`` and ``ctsim oracle``)."""
    from ctsim.reports.compare import main as compare_main

    weak = [[0.6] * 6 for _ in range(5)]  # the candidates: fine-tuned at every slice, all at 0.6
    strong = [[0.9] * 6, [0.9] * 6]  # a sparse pipeline whose own models are better
    write_matrix_run(tmp_path / "run", {"every": ([0, 1, 2, 3, 4], weak), "sparse": ([0, 3], strong)}, True)
    assert compare_main([str(tmp_path / "run"), "--out", str(tmp_path / "c")]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    page = (tmp_path / "c" / "report.html").read_text()
    for text in (md, page):
        assert "regret (approximate)" in text
        assert "Above the approximate frontier: sparse (by 0.3000)" in text
        assert "the candidates (every) are fine-tuned" in text
    assert "dotted black step line is the approximate frontier" in page
    table = pl.read_parquet(tmp_path / "c" / "compare.parquet")
    assert table.filter(pl.col("pipeline") == "sparse")["regret"].to_list() == pytest.approx([-0.3])
    assert main([str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "oracle"
    oracle_md = (out / "oracle.md").read_text()
    assert oracle_md.startswith("# Approximate frontier (candidates: every)")
    assert "frontier (approximate) | regret (approximate)" in oracle_md and "sparse (by 0.3000)" in oracle_md
    assert set(pl.read_parquet(out / "frontier.parquet")["oracle"]) == {"approximate"}
    assert set(pl.read_parquet(out / "regret.parquet")["oracle"]) == {"approximate"}
    assert "approximate frontier" in capsys.readouterr().out


def test_seeds_without_the_candidates_get_no_regret_and_the_comparison_says_so(tmp_path):
    """Candidates run for one seed only (the full drift study: scratch_yearly is costly): the comparison
    still has a frontier, regret over the seed that has it, and a note naming the seed without."""
    from ctsim.reports.compare import main as compare_main

    weak = [[0.6] * 6 for _ in range(5)]
    strong = [[0.9] * 6, [0.9] * 6]
    write_matrix_run(tmp_path / "s0", {"every": ([0, 1, 2, 3, 4], weak), "sparse": ([0, 3], strong)}, True)
    write_matrix_run(tmp_path / "s1", {"sparse": ([0, 3], strong)}, True, seed=1)
    out = tmp_path / "c"
    assert (
        compare_main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--candidates", "every", "--out", str(out)])
        == 0
    )
    md = (out / "compare.md").read_text()
    assert "No frontier for seed(s) [1]: the candidates (every) did not run there" in md
    table = pl.read_parquet(out / "compare.parquet")
    assert table.filter(pl.col("pipeline") == "sparse")["regret"].to_list() == pytest.approx([-0.3])
    # no compared seed has the candidates: an error, as before
    assert compare_main([str(tmp_path / "s1"), "--candidates", "every", "--out", str(tmp_path / "d")]) != 0
