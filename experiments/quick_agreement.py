"""Does a quick form agree with the full study seed after seed, and with itself? One quick run per seed.

    python experiments/quick_agreement.py --study portraits_selection --seeds 0 1 2 3 --into DIR
    python experiments/quick_agreement.py --study portraits_selection --seeds 0 1 --into DIR \\
        train.batch_size=64 optimizer.lr=0.005          # a setting of the quick form other than its file's

Runs ``<study>_quick`` once per seed (``population.seeds=[S]``, the variants split into one run per CPU
core as the study scripts do), into ``DIR/seed<S>``; a seed whose folder is there already is read, not
run again. Reports, per seed, Spearman's ρ between its pipeline ranking and the full study's, and its
reference pipeline's accuracy (``yearly``, or ``full`` for the selection study) against the full one;
ρ between every two seeds (how far the quick form agrees with itself); and ρ of the seeds' mean. One
seed's ρ is what a user of the quick form gets; :mod:`validate_quick` checks one run against the
targets.

The full side is as in ``validate_quick.py``: ``--full-run`` (a run folder or a ``compare.parquet``), or
by default the study's committed full report or comparison. Prints a markdown report; ``--out`` writes it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

from scipy import stats
from study import REPO, default_jobs, run_study
from validate_quick import STUDIES, Accuracy, accuracies, from_report, from_runs


def rho(a: dict[str, Accuracy], b: dict[str, Accuracy]) -> float:
    """Spearman's ρ over the pipelines both rankings have (mean composite accuracy)."""
    common = sorted(set(a) & set(b))
    return float(stats.spearmanr([a[p].mean for p in common], [b[p].mean for p in common]).statistic)


def full_reference(study: str, full_run: Path | None) -> tuple[dict[str, Accuracy], str]:
    """The full study's accuracies and where they came from: ``full_run``, else the committed
    comparison (``comparison/compare.parquet``) or report."""
    if full_run is not None:
        return accuracies(full_run), str(full_run)
    comparison = REPO / "results" / "reference" / study / "comparison" / "compare.parquet"
    if comparison.exists():
        return accuracies(comparison), str(comparison.relative_to(REPO))
    report = REPO / "results" / "reference" / study / "report.md"
    if not report.exists():
        raise SystemExit(f"no full-size reference for {study}: give --full-run ({report} is absent)")
    return from_report(report), str(report.relative_to(REPO))


def agreement(
    runs: dict[int, list[Path]], full: dict[str, Accuracy], reference: str
) -> tuple[list[str], dict[str, float]]:
    """The report's table lines and its summary figures, from each seed's run folders."""
    quick = {seed: from_runs(dirs) for seed, dirs in runs.items()}
    lines = [
        f"| seed | ρ against full size | `{reference}` quick | full size | points |",
        "|---|---|---|---|---|",
    ]
    against = {}
    for seed, q in quick.items():
        against[seed] = rho(q, full)
        if reference not in q or reference not in full:  # left out (population.only): nothing to compare
            lines.append(f"| {seed} | {against[seed]:.2f} | – | – | – |")
            continue
        ours, theirs = q[reference].mean, full[reference].mean
        points = 100 * (ours - theirs)
        lines.append(f"| {seed} | {against[seed]:.2f} | {ours:.3f} | {theirs:.3f} | {points:+.1f} |")
    pairs = {f"{a}-{b}": rho(quick[a], quick[b]) for a, b in itertools.combinations(quick, 2)}
    pooled = rho(from_runs([d for dirs in runs.values() for d in dirs]), full)
    summary = {
        "median ρ of one seed against full size": statistics.median(against.values()),
        "lowest ρ of one seed against full size": min(against.values()),
        "ρ of the seeds' mean against full size": pooled,
    }
    if pairs:
        summary["median ρ between two seeds"] = statistics.median(pairs.values())
        lines += ["", "ρ between seeds: " + ", ".join(f"{k} {v:.2f}" for k, v in pairs.items())]
    return lines, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", choices=sorted(STUDIES), default="portraits_selection")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one quick run per seed")
    parser.add_argument("--into", type=Path, required=True, help="a folder for the runs, DIR/seed<S>")
    parser.add_argument("--full-run", type=Path, help="a full run folder or its compare.parquet")
    parser.add_argument("--out", type=Path, help="the markdown report to write (default: print only)")
    parser.add_argument("overrides", nargs="*", help="more overrides for every quick run")
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds {args.seeds}: expected different whole numbers ≥ 0")
    if args.full_run is not None and not args.full_run.exists():
        parser.error(f"--full-run {args.full_run}: no such run folder or compare.parquet")
    full, source = full_reference(args.study, args.full_run)  # before minutes of runs
    runs = {}
    for seed in args.seeds:
        into = args.into / f"seed{seed}"
        if not into.exists():
            overrides = [*args.overrides, f"population.seeds=[{seed}]"]
            run_study(f"{args.study}_quick", overrides, f"seed{seed}", into, jobs=default_jobs(full=False))
        runs[seed] = sorted(into.glob("part*")) or [into]
    lines, summary = agreement(runs, full, STUDIES[args.study][0])
    command = " ".join(["python experiments/quick_agreement.py", *sys.argv[1:]])
    text = "\n".join(
        [
            f"# {args.study}: the quick form, seed by seed, against the full study",
            "",
            f"- command: `{command}`",
            f"- full size: {source}",
            "",
            *lines,
            "",
            *(f"- {k}: {v:.2f}" for k, v in summary.items()),
            "",
        ]
    )
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
