"""The hindsight-optimal trigger schedule: the best composite accuracy reachable with K triggers.

``ctsim oracle RUN_DIR [--candidates NAME] [--out DIR]``

One variant of a run is the **candidate source**: it trains a generation at (at least) every slice,
e.g. ``trigger=always`` or ``trigger=time trigger.every=1``. Any trigger schedule is a subset of
those candidates; its composite accuracy follows from the candidates' accuracy matrix alone, with
the active-model rule of :mod:`ctsim.measure.evaluation` (a chosen candidate trained through slice ``t``
serves ``t+1, …`` until a later chosen one replaces it; of candidates sharing a slice the later one
wins; slices before the first chosen candidate, or without test data, are left out of the mean). For
every budget ``K`` the oracle finds the subset of exactly ``K`` candidates with the highest
composite accuracy, and the **frontier**: the best with at most ``K``. A pipeline's **regret** is
the frontier at its own trigger count minus its composite accuracy.

**Exact for** candidates trained from scratch on all data seen (``selection=all
train.init=scratch``, no budget, no downsampling): the model trained at a point does not depend on
which earlier points triggered, so the candidate is trained on exactly the data any schedule through
that point would train its model on, and the frontier is the best any schedule of that recipe
reaches. (Each model's initial weights and data order follow its pipeline's seed and its generation
number, so a sparse schedule's own models differ from the candidates by that seed noise alone; the
brute-force test in ``tests/test_oracle.py`` uses a model whose training is seed-free and finds every
schedule's accuracy equal to the frontier's account of it.) **An approximation for** fine-tuning
(``train.init=finetune``), ``selection=new`` (data since the last trigger) or any budget: the candidate
at a point is the one trained with every earlier point triggered, and the model a sparse schedule
would train there differs. Such a frontier is labelled *approximate* in every output (the ``oracle``
column of ``frontier.parquet`` and ``regret.parquet``; the plots, tables and ``oracle.md``), and a
pipeline above it is named with the reason (:func:`above_note`). Even an exact
frontier is optimal only over schedules of the candidates' recipe: a pipeline that trains otherwise
(fine-tuned, on a window) can lie above it, and is named the same way.

:func:`candidate_variant` prefers exact candidates: a study that adds the variant
``[trigger=time, trigger.every=1, selection=all, train.init=scratch]`` gets an exact frontier without
``--candidates``.

**Every schedule starts with the initial model** (the first candidate), as every pipeline does: a
schedule that started later would be scored only on the slices it covers, and could beat every real
pipeline by covering few. ``K`` counts that first trigger, as a pipeline's ``triggers`` does.

**The search** is exact for the objective: it is ``composite(...).mean`` of the schedule, not a
proxy. Slices left out of the mean make it a ratio, not a sum: the first chosen candidate sets where
coverage starts. A dynamic programme runs backwards over the candidates: the best accuracy *sum*
of the slices a candidate and ``k`` later chosen ones serve, per candidate and per number of
slices left out of its coverage (always 0 when a slice's cells are missing for all candidates or
none; more only where some candidates lack a value on a slice others have). Dividing by the count
for each first candidate and taking the best is then exact: O(G² K) for G candidates.

>>> m = torch.tensor([[0.9, 0.2, 0.1, 0.1], [0.1, 0.1, 0.9, 0.8]], dtype=torch.float64)
>>> n = torch.tensor([5, 5, 5, 5])
>>> [(s.chosen, round(s.accuracy, 3)) for s in best_schedules(m, [0, 1], n)]  # [1] alone serves slices 2, 3
[([1], 0.85), ([0, 1], 0.633)]
>>> # as ctsim.oracle runs it: every schedule starts with the first candidate
>>> [(s.chosen, round(s.accuracy, 3)) for s in best_schedules(m, [0, 1], n, first=0)]
[([0], 0.133), ([0, 1], 0.633)]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from ctsim.measure.evaluation import active_generations, composite
from ctsim.registry.layout import read_status

TABLES = ("evals", "generations", "cost")
OUTPUTS = ("frontier.parquet", "regret.parquet", "frontier.png", "oracle.md")
FRONTIER_SCHEMA = {
    "candidates": pl.String,
    "seed": pl.Int64,
    "first_slice": pl.Int64,  # every schedule starts with the candidate trained through this slice
    "k": pl.Int64,
    "accuracy": pl.Float64,  # best with at most k triggers
    "triggers": pl.Int64,  # how many that best schedule uses
    "chosen": pl.List(pl.Int64),  # its generations
    "chosen_slices": pl.List(pl.Int64),  # and the slices they were trained through
    "exact_accuracy": pl.Float64,  # best with exactly k triggers
    "exact_chosen": pl.List(pl.Int64),
    "oracle": pl.String,  # "exact" or "approximate": what the candidates make the frontier (module docstring)
}


@dataclass(frozen=True)
class Schedule:
    """A subset of candidates (row indices, ascending) and its composite accuracy (NaN: none covered)."""

    chosen: list[int]
    accuracy: float


def schedule_accuracy(
    matrix: torch.Tensor, trained_slices: Sequence[int], n: torch.Tensor, chosen: Sequence[int]
) -> float:
    """Composite accuracy of the schedule that triggers exactly the candidates ``chosen`` (rows)."""
    rows = sorted(chosen)
    active = active_generations([trained_slices[r] for r in rows], matrix.shape[1])
    return composite(matrix[rows], active, n).mean


def best_schedules(
    matrix: torch.Tensor, trained_slices: Sequence[int], n: torch.Tensor, first: int | None = None
) -> list[Schedule]:
    """For every K = 1..G, the schedule of exactly K candidates with the highest composite accuracy.

    ``matrix`` is the candidates' (G, S) accuracy (NaN: no value), ``trained_slices[g]`` the slice
    candidate ``g``'s training data ended in (non-decreasing), ``n`` the test samples per slice.
    ``first`` fixes the first chosen candidate (the initial model every pipeline trains): without it, a
    schedule that starts late covers few slices and its mean over them can beat every real pipeline's.
    """
    trained = torch.as_tensor(list(trained_slices), dtype=torch.long)
    if len(trained) != matrix.shape[0] or bool((trained.diff() < 0).any()):
        raise ValueError(
            f"trained_slices must give one non-decreasing slice per row of the {matrix.shape[0]}-row "
            f"matrix, got {trained.tolist()}"
        )
    seg, gap, cover, depth = _segments(matrix.double(), trained, n)
    layers, pointers = _layers(seg, gap, depth)
    schedules = []
    for k, layer in enumerate(layers):
        chosen = _trace(layer, cover, pointers[:k], gap, first)
        schedules.append(Schedule(chosen, schedule_accuracy(matrix, trained.tolist(), n, chosen)))
    return schedules


def _segments(
    matrix: torch.Tensor, trained: torch.Tensor, n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """What candidate g contributes when candidate j is the next chosen one (column G: none is).

    Returns the accuracy sum ``seg[g, j]`` over the slices g then serves that count, the number
    ``gap[g, j]`` of them g has no value on although another candidate has, ``cover[g]``: the
    slices after g's that count for some candidate (the coverage of a schedule g starts), and one
    more than the most gaps a schedule can have (a slice is served by one candidate at most).
    """
    num_slices = matrix.shape[1]
    valid = (n > 0).unsqueeze(0) & ~matrix.isnan()
    counted = valid.any(0)
    zero = torch.zeros(matrix.shape[0], 1, dtype=torch.float64)
    sums = torch.cat([zero, torch.where(valid, matrix, 0.0)], 1).cumsum(1)
    gaps = torch.cat([zero.long(), (counted & ~valid).long()], 1).cumsum(1)
    start = (trained + 1).clamp(max=num_slices)  # g serves slices start[g] … up to the next one's
    end = torch.cat([start, torch.tensor([num_slices])])
    seg = sums[:, end] - sums.gather(1, start.unsqueeze(1))
    gap = gaps[:, end] - gaps.gather(1, start.unsqueeze(1))
    cover = counted.long().sum() - torch.cat([torch.zeros(1, dtype=torch.long), counted.long().cumsum(0)])
    depth = int((counted & ~valid).any(0).sum()) + 1
    return seg, gap, cover[start], depth


def _layers(
    seg: torch.Tensor, gap: torch.Tensor, depth: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``layers[k][g, d]``: the best sum of g and k later chosen candidates with d gaps (-inf: none).

    ``pointers[k - 1][g, d]`` is the candidate chosen after g in that best schedule.
    """
    num = seg.shape[0]
    later = torch.ones(num, num, dtype=torch.bool).triu(1)
    rows = torch.arange(num)
    last = torch.full((num, depth), -math.inf, dtype=torch.float64)
    last[rows, gap[rows, num]] = seg[:, num]
    layers, pointers = [last], []
    deltas = gap[:, :num][later].unique().tolist()
    for _ in range(1, num):
        prev, best = layers[-1], torch.full_like(last, -math.inf)
        arg = torch.zeros(num, depth, dtype=torch.long)
        for delta in deltas:
            shifted = torch.full_like(prev, -math.inf)
            shifted[:, delta:] = prev[:, : depth - delta]
            value = seg[:, :num, None] + shifted[None]  # (g, next j, gaps d)
            value[~(later & (gap[:, :num] == delta))] = -math.inf
            value, j = value.max(1)
            better = value > best
            best, arg = torch.where(better, value, best), torch.where(better, j, arg)
        layers.append(best)
        pointers.append(arg)
    return layers, pointers


def _trace(
    layer: torch.Tensor,
    cover: torch.Tensor,
    pointers: list[torch.Tensor],
    gap: torch.Tensor,
    first: int | None,
) -> list[int]:
    """The best schedule of one layer: the best ratio over first candidates and gap counts, followed."""
    count = cover.unsqueeze(1) - torch.arange(layer.shape[1]).unsqueeze(0)
    ratio = torch.where(layer.isfinite() & (count > 0), layer / count.clamp(min=1), -math.inf)
    if first is not None:
        ratio[torch.arange(len(ratio)) != first] = -math.inf
    if not bool(ratio.isfinite().any()):  # no schedule of this size covers a slice: any one will do
        ratio = torch.where(layer.isfinite(), 0.0, -math.inf)
    g, d = divmod(int(ratio.flatten().argmax()), layer.shape[1])
    chosen = [g]
    for pointer in reversed(pointers):
        j = int(pointer[g, d])
        g, d = j, d - int(gap[g, j])
        chosen.append(g)
    return chosen


# -- from a run's tables ---------------------------------------------------------------------------


class OracleError(ValueError):
    """A run folder the oracle cannot read; the message says what is missing and what is allowed."""


def candidate_variant(
    generations: pl.DataFrame, num_slices: int, name: str | None = None, prefer: Sequence[str] = ()
) -> str:
    """The variant whose every seed has a generation trained through every slice but possibly the last.

    ``name`` picks one; it must exist. Of several that qualify, one in ``prefer`` (those whose
    candidates make the frontier exact: :func:`exactness`), then the one with the most generations,
    then the first in the table.
    """
    variants = generations["pipeline"].unique(maintain_order=True).to_list()
    if name is not None:
        if name not in variants:
            raise OracleError(
                f"--candidates {name}: no such variant in this run; it has {', '.join(variants)}"
            )
        return name
    coverage = (
        generations.filter(pl.col("trigger_slice") < num_slices - 1)  # the last slice serves none
        .group_by("pipeline", "seed", maintain_order=True)
        .agg(pl.col("trigger_slice").n_unique().alias("slices"), pl.len().alias("generations"))
        .group_by("pipeline", maintain_order=True)
        .agg(pl.col("slices").min(), pl.col("generations").sum())
    )
    full = (
        coverage.filter(pl.col("slices") >= num_slices - 1)
        .with_columns(pl.col("pipeline").is_in(list(prefer)).alias("exact"))
        .sort("exact", "generations", descending=True, maintain_order=True)
    )
    if full.height == 0:
        shown = ", ".join(f"{r['pipeline']}: {r['slices']}" for r in coverage.iter_rows(named=True))
        raise OracleError(
            f"no variant has a generation at every slice (at least {num_slices - 1} of {num_slices}), "
            f"so there are no candidates; slices covered per variant: {shown}. Add a variant with "
            "trigger=time trigger.every=1 selection=all train.init=scratch (exact) or trigger=always"
        )
    return str(full["pipeline"][0])


def pipeline_config(config: Mapping | None, pipeline: str) -> dict:
    """A pipeline's groups (trigger, selection, train, …) from a run's ``status.json`` ``config``: the
    run's own, changed by the pipeline's variant (a group whose class differs is given whole)."""
    config = config or {}
    run, changes = config.get("run") or {}, (config.get("pipelines") or {}).get(pipeline) or {}
    out = dict(run)
    for group, changed in changes.items():
        whole = "_target_" in changed and changed["_target_"] != (run.get(group) or {}).get("_target_")
        out[group] = dict(changed) if whole else {**(run.get(group) or {}), **changed}
    return out


def exactness(config: Mapping | None, generations: pl.DataFrame, candidates: str) -> tuple[bool, str]:
    """Whether the ``candidates`` pipeline's models make the frontier exact, and why, in a sentence.

    Exact: every candidate was trained from scratch (``generations``: no parent) on all data seen so
    far (the pipeline's ``selection`` in ``config``, a run's ``status.json`` config, is ``AllData``
    without a budget or downsampler). ``config`` is the config of the run the candidates come from
    (None: unknown, so approximate).
    """
    own = generations.filter(pl.col("pipeline") == candidates)
    if own["parent"].is_not_null().any():
        return False, f"the candidates ({candidates}) are fine-tuned, each from the one before it"
    found = pipeline_config(config, candidates) if config else {}
    selection = found.get("selection") or {}
    if not selection:
        return False, f"the run does not record what data the candidates ({candidates}) were trained on"
    if not str(selection.get("_target_", "")).endswith(".AllData"):
        what = str(selection.get("_target_", "?")).rsplit(".", 1)[-1]
        return False, f"the candidates ({candidates}) are trained on a selection ({what}), not on all data"
    budget = [k for k in ("limit", "fraction", "downsample") if selection.get(k) is not None]
    if budget:
        return False, f"the candidates ({candidates}) are trained on a part of the data ({', '.join(budget)})"
    return True, f"the candidates ({candidates}) are trained from scratch on all data seen"


def above_note(above: Sequence[tuple[str, float]], candidates: str, exact: bool, why: str) -> str:
    """Why ``above`` (pipeline, mean regret < 0) lie above the frontier: no contradiction, named."""
    shown = ", ".join(f"{name} (by {-regret:.4f})" for name, regret in above)
    if exact:
        return (
            f"Above the frontier: {shown}. The frontier is exact for schedules of its candidates' recipe "
            f"({why}); these pipelines train otherwise (e.g. fine-tuned, or on a window of data), and their "
            "recipe, not their schedule, puts them above it."
        )
    return (
        f"Above the approximate frontier: {shown}. It is approximate because {why}: a schedule with fewer "
        f"triggers would train different models than {candidates}'s, which the frontier cannot see, so "
        "it can lie below real pipelines. For an exact frontier add a pipeline "
        "[trigger=time, trigger.every=1, selection=all, train.init=scratch] (ctsim.reports.oracle)."
    )


def frontier(
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    candidates: str,
    first_slice: int | None = None,
    exact_frontier: bool = False,
) -> pl.DataFrame:
    """Per seed of the ``candidates`` variant and budget k: the best composite accuracy (FRONTIER_SCHEMA).

    Every schedule starts with the candidate trained through ``first_slice`` (the last one trained
    through it or before; default: the first candidate), so it covers the slices a pipeline whose
    first model was trained there covers. ``exact_frontier``: what :func:`exactness` says of the
    candidates, carried into the ``exact`` column.
    """
    acc = evals.filter((pl.col("metric") == "accuracy") & (pl.col("pipeline") == candidates))
    rows = []
    for seed in sorted(acc["seed"].unique().to_list()):
        ev = acc.filter(pl.col("seed") == seed)
        wide = ev.pivot(on="slice", index="generation", values="value", sort_columns=True).sort("generation")
        matrix = torch.tensor(wide.drop("generation").to_numpy().astype(float), dtype=torch.float64)
        n = torch.tensor(ev.group_by("slice").agg(pl.col("n").first()).sort("slice")["n"].to_list())
        gens = generations.filter((pl.col("pipeline") == candidates) & (pl.col("seed") == seed))
        gens = gens.sort("generation")
        trained, ids = gens["trigger_slice"].to_list(), gens["generation"].to_list()
        at = trained[0] if first_slice is None else first_slice
        first = max([g for g, t in enumerate(trained) if t <= at], default=0)
        best: Schedule | None = None
        for k, exact in enumerate(best_schedules(matrix, trained, n, first=first), start=1):
            if best is None or (
                not math.isnan(exact.accuracy)
                and (math.isnan(best.accuracy) or exact.accuracy > best.accuracy)
            ):
                best = exact
            rows.append(
                {
                    "candidates": candidates,
                    "seed": seed,
                    "first_slice": trained[first],
                    "k": k,
                    "accuracy": best.accuracy,
                    "triggers": len(best.chosen),
                    "chosen": [ids[g] for g in best.chosen],
                    "chosen_slices": [trained[g] for g in best.chosen],
                    "exact_accuracy": exact.accuracy,
                    "exact_chosen": [ids[g] for g in exact.chosen],
                    "oracle": "exact" if exact_frontier else "approximate",
                }
            )
    return pl.DataFrame(rows, schema=FRONTIER_SCHEMA)


def seeds_without(cost: pl.DataFrame, generations: pl.DataFrame, candidates: str) -> list[int]:
    """The seeds of ``cost`` for which the candidates trained nothing (no frontier there)."""
    have = set(generations.filter(pl.col("pipeline") == candidates)["seed"].to_list())
    return sorted(set(cost["seed"].to_list()) - have)


REGRET_SCHEMA = {
    "pipeline": pl.String,
    "seed": pl.Int64,
    "triggers": pl.Int64,
    "first_slice": pl.Int64,
    "composite_accuracy": pl.Float64,
    "frontier_accuracy": pl.Float64,
    "regret": pl.Float64,
    "oracle": pl.String,  # the frontier's: "exact" or "approximate" (see FRONTIER_SCHEMA)
}


def regrets(
    cost: pl.DataFrame,
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    candidates: str,
    exact_frontier: bool = False,
    partial: bool = False,
) -> pl.DataFrame:
    """Per pipeline and seed: the frontier at its trigger count minus its accuracy.

    The frontier it is measured against starts where the pipeline's first model was trained (its
    composite accuracy covers the slices after it, and so does the frontier's), at most the
    candidates' count of triggers. A seed whose runs lack the candidates has no frontier: an error, or
    with ``partial`` its rows without one (:func:`seeds_without`).
    """
    missing = seeds_without(cost, generations, candidates)
    if missing and not partial:
        raise OracleError(
            f"the candidates ({candidates}) have no generations for seed(s) {missing}; "
            "the pipelines of those seeds have no frontier"
        )
    firsts = generations.group_by("pipeline", "seed").agg(pl.col("trigger_slice").min().alias("first_slice"))
    scored = cost.select("pipeline", "seed", "triggers", "composite_accuracy").join(
        firsts, on=["pipeline", "seed"], how="left"
    )
    fronts = {
        first: frontier(evals, generations, candidates, first, exact_frontier)
        for first in scored["first_slice"].drop_nulls().unique().to_list()
    }
    rows = []
    for r in scored.iter_rows(named=True):
        value = None
        if r["first_slice"] is not None and r["seed"] not in missing:
            front = fronts[r["first_slice"]].filter(pl.col("seed") == r["seed"])
            k = min(r["triggers"], front["k"].max())
            value = front.filter(pl.col("k") == k)["accuracy"][0]
        regret = None if value is None or r["composite_accuracy"] is None else value - r["composite_accuracy"]
        word = "exact" if exact_frontier else "approximate"
        rows.append({**r, "frontier_accuracy": value, "regret": regret, "oracle": word})
    return pl.DataFrame(rows, schema=REGRET_SCHEMA)


def plot(front: pl.DataFrame, cost: pl.DataFrame, path: Path) -> Path:
    """Composite accuracy against triggers: every pipeline (mean over seeds), the frontier as a step line."""
    from ctsim.reports.plots import accuracy_triggers, seed_table

    return accuracy_triggers(seed_table(cost), front, path)


def markdown(front: pl.DataFrame, regret: pl.DataFrame, candidates: str, why: str) -> str:
    exact = bool((front["oracle"] == "exact").all()) if front.height else False
    mean_front = front.group_by("k").agg(pl.col("accuracy").mean()).sort("k")
    word = "exact" if exact else "approximate"
    title = (
        f"# Hindsight-optimal schedule (exact; candidates: {candidates})"
        if exact
        else f"# Approximate frontier (candidates: {candidates})"
    )
    lines = [
        title,
        "",
        f"The frontier is {word}: {why}. "
        + (
            "It is the best composite accuracy any schedule of that recipe reaches with at most k triggers."
            if exact
            else "It is the best composite accuracy of schedules made of these candidates; a real schedule "
            "with fewer triggers would train other models, so real pipelines can lie above it."
        ),
        "",
        f"| k | accuracy ({word}) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {a:.4f} |" for k, a in mean_front.iter_rows()]
    per = regret.group_by("pipeline", maintain_order=True).agg(
        pl.col("triggers").mean(),
        pl.col("composite_accuracy").mean(),
        pl.col("frontier_accuracy").mean(),
        pl.col("regret").mean(),
    )
    lines += [
        "",
        f"Regret ({word}): the frontier at a pipeline's trigger count minus its accuracy, mean over seeds.",
        "",
    ]
    lines += [
        f"| pipeline | triggers | accuracy | frontier ({word}) | regret ({word}) |",
        "|---|---|---|---|---|",
    ]
    for r in per.iter_rows(named=True):
        lines.append(
            f"| {r['pipeline']} | {r['triggers']:.1f} | {_num(r['composite_accuracy'])} | "
            f"{_num(r['frontier_accuracy'])} | {_num(r['regret'])} |"
        )
    above = [(r["pipeline"], r["regret"]) for r in per.iter_rows(named=True) if (r["regret"] or 0) < -1e-12]
    if above:
        lines += ["", above_note(above, candidates, exact, why)]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def run_oracle(
    run_dir: Path, candidates: str | None = None, out: Path | None = None
) -> tuple[Path, pl.DataFrame, str]:
    """Read a run folder, write the frontier, the regrets, the plot and a summary; return the folder."""
    missing = [t for t in TABLES if not (run_dir / f"{t}.parquet").exists()]
    if missing:
        raise OracleError(
            f"{run_dir} is not a finished ctsim run: missing {', '.join(t + '.parquet' for t in missing)}"
        )
    evals, generations, cost = (pl.read_parquet(run_dir / f"{t}.parquet") for t in TABLES)
    out = out or run_dir / "oracle"
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing:
        raise OracleError(
            f"{out} already holds {', '.join(existing)}; the oracle never overwrites files (use --out)"
        )
    num_slices = evals["slice"].n_unique()
    config = (read_status(run_dir) or {}).get("config")
    names = generations["pipeline"].unique(maintain_order=True).to_list()
    exact = [p for p in names if exactness(config, generations, p)[0]]
    name = candidate_variant(generations, num_slices, candidates, prefer=exact)
    is_exact, why = exactness(config, generations, name)
    front = frontier(evals, generations, name, exact_frontier=is_exact)
    regret = regrets(cost, evals, generations, name, exact_frontier=is_exact)
    out.mkdir(parents=True, exist_ok=True)
    front.write_parquet(out / "frontier.parquet")
    regret.write_parquet(out / "regret.parquet")
    plot(front, cost, out / "frontier.png")
    (out / "oracle.md").write_text(markdown(front, regret, name, why))
    return out, regret, name


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ctsim oracle", description="The hindsight-optimal trigger schedule of a run."
    )
    parser.add_argument("run_dir", type=Path, help="a finished run folder (results/runs/<name>/<time>)")
    parser.add_argument("--candidates", help="the variant that trains at every slice (default: found)")
    parser.add_argument("--out", type=Path, help="where to write (default: RUN_DIR/oracle)")
    args = parser.parse_args(list(argv))
    try:
        out, regret, name = run_oracle(args.run_dir, args.candidates, args.out)
    except (OracleError, ValueError, pl.exceptions.PolarsError, OSError) as e:
        print(f"ctsim.oracle: {e}", file=sys.stderr)
        return 2
    per = regret.group_by("pipeline", maintain_order=True).agg(
        pl.col("triggers").mean(), pl.col("regret").mean()
    )
    how = "given" if args.candidates else "found: the variant that trains at every slice"
    word = regret["oracle"][0] if regret.height else "approximate"
    print(f"ctsim.oracle: candidates {name} ({how}); {word} frontier; wrote {', '.join(OUTPUTS)} to {out}/")
    for r in per.iter_rows(named=True):
        print(f"  {r['pipeline']:<24} triggers {r['triggers']:7.1f}  regret ({word}) {_num(r['regret'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
