"""Case study: Modyn's data-selection study on the portraits, ranked against Modyn's Yearbook numbers.

    python experiments/portraits_selection.py                       # the quick form: minutes on 2 cores
    python experiments/portraits_selection.py --full --into DIR     # full size, Modyn's setup: hours
    python -m ctsim resume DIR                                      # continue a full run that was stopped
    python experiments/portraits_selection.py --full --run-dir DIR  # report on a run already made
    python experiments/portraits_selection.py 'population.seeds=[0,1]'   # extra ctsim overrides

Without a GPU the quick form runs as one run per CPU core, side by side, one torch thread each
(``--jobs N`` to choose; ``--full`` runs one). For one run on a busy CPU, set OMP_NUM_THREADS=1: torch's
two intra-op threads then wait on each other (~7× slower training here).

Runs ``python -m ctsim experiment=portraits_selection_quick`` (``--full``:
``experiment=portraits_selection``: 23 selection policies × 3 seeds, a yearly trigger, fine-tuning),
then writes ``results/reference/portraits_selection/report[_quick].md``: per
policy the fraction kept, composite accuracy (mean ± sd and a 95% t interval over seeds), samples
trained, training and selection cost, beside Modyn's reported Yearbook accuracy; our ranking at 50%
against Modyn's, with Spearman's rank correlation; and two plots of its comparison.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import polars as pl
from scipy import stats
from study import (
    REPO,
    Timing,
    experiment_name,
    heading,
    jobs_of,
    quick_knobs,
    run_study,
    size_flags,
    write_comparison,
)

from ctsim.registry import load
from ctsim.registry.layout import read_status
from ctsim.reports import significance

OUT = REPO / "results" / "reference" / "portraits_selection"
SCORES = ("loss", "grad_norm", "least_confidence", "entropy", "margin")
# Modyn (SIGMOD), Yearbook, 50% kept: accuracy in %; not split by StB/BtS.
MODYN = {
    "full": 92.36,
    "entropy": 91.43,
    "least_confidence": 91.22,
    "margin": 91.17,
    "rs2": 88.80,
    "rs2_replace": 88.43,
    "class_balanced": 88.24,
    "uniform": 87.81,
    "grad_norm": 85.93,
    "loss": 83.75,
}


def describe(variant: str) -> tuple[str, str, float]:
    """A variant's strategy, form (stb, bts or –) and fraction kept, from its name."""
    fraction = {"25": 0.25, "12": 0.125}.get(variant.rsplit("_", 1)[-1], 0.5)
    base = variant.removesuffix("_25").removesuffix("_12")
    if base == "full":
        return "full", "–", 1.0
    if base.endswith(("_stb", "_bts")):
        return base[:-4], base[-3:], fraction
    return base, "–", fraction


def settings(run_dir: Path) -> str:
    """The training settings a run was made with, from the config its ``status.json`` records."""
    cfg = read_status(run_dir)["config"]["run"]
    size, channels = cfg["dataset"].get("size", 1.0), cfg["model"].get("channels")
    model = f"{channels} wide" if channels else cfg["model"]["_target_"].rsplit(".", 1)[-1]
    epochs = cfg["train"]["epochs"]
    return (
        f"{'all the data' if size == 1 else f'{size:g} of every year'}, {model}, "
        f"batch {cfg['train']['batch_size']}, {epochs} epoch{'s' * (epochs != 1)}, "
        f"lr {cfg['optimizer']['lr']:g}"
    )


def variant_table(cost: pl.DataFrame) -> pl.DataFrame:
    table = cost.group_by("pipeline", maintain_order=True).agg(
        pl.len().alias("seeds"),
        (100 * pl.col("composite_accuracy").mean()).alias("accuracy"),
        (100 * pl.col("composite_accuracy").std()).alias("sd"),
        pl.col("samples_trained").mean(),
        pl.col("optimizer_steps").mean().alias("steps"),
        (pl.col("train_flops").mean() / 1e12).alias("train_tflops"),
        (pl.col("selection_flops").mean() / 1e12).alias("selection_tflops"),
        pl.col("selection_s").mean(),
        pl.col("train_s").mean(),
    )
    rows = []
    for row in table.iter_rows(named=True):
        strategy, form, fraction = describe(row["pipeline"])
        n, sd = row["seeds"], row["sd"]
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 and sd is not None else None
        modyn = MODYN.get(strategy) if fraction in (0.5, 1.0) else None
        rows.append(
            {**row, "strategy": strategy, "form": form, "fraction": fraction, "ci": half, "modyn": modyn}
        )
    return pl.DataFrame(rows)


def rankings(
    table: pl.DataFrame, form: str | None = None
) -> tuple[list[tuple[str, float, str]], list[tuple[str, float]], float]:
    """Ours and Modyn's at 50% (score strategies: the better form, or only ``form``), and Spearman's
    rho over both."""
    ours: dict[str, tuple[float, str]] = {}
    rows = table.filter(pl.col("fraction").is_in([0.5, 1.0]))
    if form is not None:
        rows = rows.filter(pl.col("form").is_in(["–", form]))
    for row in rows.iter_rows(named=True):
        best = ours.get(row["strategy"])
        if row["accuracy"] is not None and (best is None or row["accuracy"] > best[0]):
            ours[row["strategy"]] = (row["accuracy"], row["form"])
    common = [s for s in MODYN if s in ours]
    mine = sorted(((s, *ours[s]) for s in common), key=lambda r: -r[1])
    theirs = sorted(((s, MODYN[s]) for s in common), key=lambda r: -r[1])
    rho = stats.spearmanr([ours[s][0] for s in common], [MODYN[s] for s in common]).statistic
    return mine, theirs, float(rho)


def report(run_dirs: list[Path], timing: Timing | None, quick: bool, extra: list[str] = ()) -> Path:
    """The report of one run, or of several (e.g. groups of variants run side by side) together."""
    loaded = [load(d) for d in run_dirs]
    cost = pl.concat([t["cost"].collect() for t in loaded], how="diagonal_relaxed")
    evals = pl.concat([t["evals"].collect() for t in loaded], how="diagonal_relaxed")
    table = variant_table(cost)
    found = significance.groups(evals, {r["pipeline"]: r["accuracy"] for r in table.iter_rows(named=True)})
    table = table.join(found.select("pipeline", "group"), on="pipeline", how="left").sort(
        "accuracy", descending=True, nulls_last=True
    )
    mine, theirs, rho = rankings(table)
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    seeds = sorted(cost["seed"].unique().to_list())
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = f"{threads}python experiments/portraits_selection.py" + ("" if quick else " --full")
    command += "".join(f" '{o}'" for o in extra)
    title = "portraits_selection" + (f" (quick form: {quick_knobs('portraits_selection')})" if quick else "")
    lines = [
        *heading(title, command, run_dirs, timing),
        "The shape of Modyn's SIGMOD data-selection study: a yearly time trigger, fine-tuning, the data "
        "since the last trigger (selection=new), YearbookNet, SGD with momentum 0.9; here "
        f"{settings(run_dirs[0])} "
        "(Modyn: all the data, 32 wide, batch 64, 5 epochs, lr 0.001)"
        + f"; seeds {seeds}. **Nothing was tuned to match Modyn.** Modyn trained on the real Yearbook "
        "portraits (37,189 US high-school photos, 1930-2013); ctsim's `portraits` is its built-in "
        "synthetic stand-in: 32×32 grayscale portraits drawn procedurally, one slice per year with "
        "Yearbook's per-year counts, and drift designed in (hair length stops marking the class in 1970, "
        "the hair-shade link reverses gradually, a weak stable collar cue, covariate drift in contrast, "
        "grain and glasses). Absolute accuracies are therefore not comparable; rankings may be.",
        "",
        "accuracy: composite accuracy in % (the active model on every year's test split, mean over years), "
        "mean ± sd over seeds, with the half-width of a 95% t interval; samples: selected samples × "
        "epochs, summed over triggers; steps: optimizer steps (bts takes as many as full, each on the "
        "top part of a full batch); TFLOPs and seconds are means per pipeline. Modyn: the Yearbook "
        "accuracy Modyn reports at 50% kept; Modyn does not split score strategies by StB/BtS, so the "
        "same figure stands beside both forms. Selection: the scoring forward passes (one per scored "
        "sample); for bts they run inside training steps, so their seconds are in train s. Seconds are "
        "wall-clock: in a run that was stopped and resumed, or whose machine paused, a generation that "
        "spanned the pause counts it, so compare costs by TFLOPs. Portraits has "
        "two classes, so least_confidence (1 − p_max), margin (1 − (p_max − p_min) = 2 − 2 p_max) and "
        "entropy all decrease with p_max: keeping the top scores, they keep the same samples.",
        "",
        "Sorted by accuracy. group: variants the data cannot tell apart share a group (1: not "
        "distinguishable from the best; paired tests against each group's best, Holm-corrected at 0.05, "
        "over seeds where 3 or more are shared, else over evaluation slices; ctsim.reports.significance). "
        "Rank only across groups.",
        "",
        "| variant | strategy | form | kept | accuracy % | group | 95% CI ± | samples | steps | train TFLOPs "
        "| selection TFLOPs | selection s | train s | Modyn % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        acc = _f(r["accuracy"], 2) + ("" if r["sd"] is None else f" ± {r['sd']:.2f}")
        group = "–" if r["group"] is None else str(r["group"])
        lines.append(
            f"| {r['pipeline']} | {r['strategy']} | {r['form']} | {r['fraction']:g} | {acc} | {group} | "
            f"{_f(r['ci'], 2)} | {r['samples_trained']:,.0f} | {r['steps']:.0f} | {r['train_tflops']:.4f} | "
            f"{r['selection_tflops']:.4f} | {r['selection_s']:.1f} | {r['train_s']:.1f} | "
            f"{_f(r['modyn'], 2)} |"
        )
    lines += [
        "",
        "## Ranking at 50% kept (full: everything)",
        "",
        "Ranked by mean accuracy. For the score strategies ours takes the better of StB and BtS (the "
        "form in brackets), as Modyn reports one figure per strategy.",
        "",
        "| rank | ours | accuracy % | group | Modyn's | accuracy % |",
        "|---|---|---|---|---|---|",
    ]
    group_of = {
        (r["strategy"], r["form"]): r["group"]
        for r in table.filter(pl.col("fraction").is_in([0.5, 1.0])).iter_rows(named=True)
    }
    for i, ((s, acc, form), (m, macc)) in enumerate(zip(mine, theirs), 1):
        shown = f"{s} ({form})" if form != "–" else s
        group = group_of.get((s, form))
        lines.append(f"| {i} | {shown} | {acc:.2f} | {'–' if group is None else group} | {m} | {macc:.2f} |")
    lines += [
        "",
        f"Spearman's rank correlation over these {len(mine)} strategies: ρ = {rho:.2f} "
        "(scipy.stats.spearmanr, tied accuracies at their average rank; 1: the same order, 0: unrelated, "
        "-1: reversed). Both lists include full (everything kept). Ranks within one significance "
        "group are not told apart by the data: a ρ over them measures noise as much as agreement.",
        "",
    ]
    by_form = {form: rankings(table, form)[2] for form in ("stb", "bts")}
    if all(not math.isnan(r) for r in by_form.values()):
        lines += [
            "Taking one form for every score strategy instead of the better one: "
            + ", ".join(f"{form.upper()} only ρ = {r:.2f}" for form, r in by_form.items())
            + ". StB trains on half the steps of full, as rs2 and uniform do; BtS takes as many steps "
            "as full.",
            "",
        ]
    shared = {group_of.get((s, form)) for s, _, form in mine}
    if len(shared) == 1 and None not in shared:
        lines += [
            f"**All {len(mine)} strategies at 50% are in one significance group**: this run cannot rank "
            "them, and its ρ against Modyn's ranking says nothing about agreement.",
            "",
        ]
    plots = write_comparison(run_dirs, "portraits_selection", quick, command).relative_to(OUT) / "plots"
    lines += [
        f"![accuracy against cost]({plots}/pareto.png)",
        "",
        f"![composite accuracy]({plots}/composite.png)",
    ]
    path = OUT / f"report{suffix}.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())
    return path


def _f(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size_flags(parser, quick_knobs("portraits_selection"), jobs=True)
    parser.add_argument(
        "--run-dir", type=Path, nargs="+", help="report on these finished runs instead of running one"
    )
    parser.add_argument("--wall", type=float, help="with --run-dir: the run's wall time to report (seconds)")
    parser.add_argument("--cpu", type=float, help="with --run-dir: the run's CPU time to report (seconds)")
    parser.add_argument("overrides", nargs="*", help="extra ctsim overrides (e.g. 'population.seeds=[0]')")
    args = parser.parse_args()
    quick = not args.full
    if args.run_dir:
        timing = Timing(args.wall, args.cpu, len(args.run_dir)) if args.wall else None
        report([d.resolve() for d in args.run_dir], timing, quick)
        return
    experiment = experiment_name("portraits_selection", args.full)
    tag = "quick" if quick else "full"
    run_dirs, timing = run_study(experiment, args.overrides, tag, args.into, jobs_of(args))
    report(run_dirs, timing, quick, args.overrides)


if __name__ == "__main__":
    main()
