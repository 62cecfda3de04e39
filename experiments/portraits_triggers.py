"""Case study: a trigger study on the portraits (27 pipelines) and its accuracy-cost table.

    python experiments/portraits_triggers.py                      # the quick form: minutes on 2 CPU cores
    python experiments/portraits_triggers.py --full               # full size: ~53 min on 2 CPU cores
    python experiments/portraits_triggers.py --compare            # and again with engine=sequential
    python experiments/portraits_triggers.py --run-dir DIR [DIR ...]   # report on runs already made
    python experiments/portraits_triggers.py --jobs 1             # one run (default: one per core, no GPU)

Runs ``python -m ctsim experiment=portraits_triggers_quick`` (``--full``: ``experiment=portraits_triggers``;
time triggers every 1, 2, 5, 10 and 20 years, amount triggers of 500, 1,000 and 5,000 samples, never;
3 seeds each) and writes ``results/reference/portraits_triggers/report[_quick].md`` and its comparison
(``comparison[_quick]/``, :mod:`ctsim.reports.compare`): per trigger policy the triggers, the
composite accuracy (mean ± sd over seeds), samples trained, training FLOPs and seconds, plus the run's
wall and CPU time. The quick form's ranking is checked against the full one by
``experiments/validate_quick.py``. With ``--compare`` it runs the reference engine too and reports
whether every accuracy value in ``evals.parquet`` is identical.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
import torch
from study import (
    REPO,
    Timing,
    commit,
    experiment_name,
    jobs_of,
    quick_knobs,
    run_study,
    size_flags,
    write_comparison,
)

from ctsim.registry import load
from ctsim.reports import significance
from ctsim.reports.summary import pipeline_summary

OUT = REPO / "results" / "reference" / "portraits_triggers"
KEYS = ["pipeline", "seed", "generation", "slice", "metric"]


def run(
    full: bool, overrides: list[str], tag: str, into: Path | None = None, jobs: int = 1
) -> tuple[list[Path], Timing]:
    return run_study(experiment_name("portraits_triggers", full), overrides, tag, into, jobs)


def costs(run_dirs: list[Path]) -> pl.DataFrame:
    """The cost tables of one run, or of several (e.g. one seed each), together."""
    return pl.concat([load(d)["cost"].collect() for d in run_dirs], how="diagonal_relaxed")


def table(cost: pl.DataFrame) -> pl.DataFrame:
    return pipeline_summary(cost).select(
        "pipeline",
        "seeds",
        "triggers",
        "accuracy",
        "accuracy_sd",
        "samples_trained",
        "train_tflops",
        "train_s",
        "total_s",
    )


def cpu_threads(run_dirs: list[Path]) -> str:
    """The torch CPU threads each run recorded in its status.json ("?" where one did not)."""
    found = set()
    for d in run_dirs:
        status = d / "status.json"
        found.add(json.loads(status.read_text()).get("cpu_threads", "?") if status.exists() else "?")
    return "/".join(str(t) for t in sorted(found, key=str))


def identical(a: Path, b: Path) -> tuple[int, int]:
    ea = load(a)["evals"].collect().sort(KEYS)
    eb = load(b)["evals"].collect().sort(KEYS)
    assert ea.select(KEYS).equals(eb.select(KEYS)), "the two runs evaluated different cells"
    same = int((ea["value"].eq_missing(eb["value"])).sum())
    return same, ea.height


def markdown(frame: pl.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.iter_rows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join("–" if c in ("None", "nan") else c for c in cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_flags(parser, quick_knobs("portraits_triggers"), jobs=True)
    parser.add_argument("--compare", action="store_true", help="run engine=sequential too and compare values")
    parser.add_argument(
        "--run-dir", type=Path, nargs="+", help="report on these runs (e.g. one per seed) instead of running"
    )
    parser.add_argument("--seconds", type=float, help="with --run-dir: the wall time measured for it")
    parser.add_argument("--cpu", type=float, help="with --run-dir: the CPU time measured for it")
    parser.add_argument("overrides", nargs="*", help="more overrides for the run")
    args = parser.parse_args()
    quick = not args.full
    experiment = experiment_name("portraits_triggers", args.full)
    if args.run_dir:
        run_dirs, timing = args.run_dir, (Timing(args.seconds, args.cpu) if args.seconds else None)
    else:
        jobs = 1 if args.compare else jobs_of(args)  # --compare matches one run's cells with another's
        run_dirs, timing = run(args.full, args.overrides, "batched", args.into, jobs)
    cost = costs(run_dirs)
    summary = table(cost)
    evals = pl.concat([load(d)["evals"].collect() for d in run_dirs], how="diagonal_relaxed")
    found = significance.groups(evals, dict(zip(summary["pipeline"], summary["accuracy"])))
    summary = (
        summary.join(found.select("pipeline", "group"), on="pipeline", how="left")
        .select("pipeline", "group", pl.exclude("pipeline", "group"))
        .sort("accuracy", descending=True, nulls_last=True)
    )
    engine, device = cost["engine"][0], cost["device"][0]
    threads = cpu_threads(run_dirs)
    seeds = cost["seed"].n_unique()
    lines = [
        f"# portraits_triggers{' (quick form)' if quick else ''}: {cost.height} pipelines"
        + (" in one process" if len(run_dirs) == 1 else f" in {len(run_dirs)} runs side by side"),
        "",
        *(
            [
                "- runs read together (side by side; wall: the longest, CPU: the sum): "
                + " ".join(f"`{d}`" for d in run_dirs)
            ]
            if len(run_dirs) > 1
            else []
        ),
        f"- command: `{' '.join([f'python -m ctsim experiment={experiment}', *args.overrides])}`",
        f"- engine {engine} on {device}; torch {torch.__version__}, {threads} CPU thread(s) per run; "
        f"commit {commit()}",
        f"- {timing} for the command" if timing else "- wall time: not measured here",
        "",
        f"Per trigger policy, means over {seeds} seeds: `accuracy` is the mean composite accuracy (the",
        "active model per slice), `samples_trained` selected samples × epochs, `train_tflops` measured with",
        "torch.utils.flop_counter. Sorted by accuracy; `group`: pipelines the data cannot tell apart",
        "share a group (1: not distinguishable from the best; paired tests against each group's best,",
        "Holm-corrected at 0.05, over seeds where 3 or more are shared, else over evaluation slices;",
        "ctsim.reports.significance). Rank only across groups.",
        "",
        *markdown(summary),
    ]
    if args.compare:
        (reference,), ref_timing = run(args.full, [*args.overrides, "engine=sequential"], "sequential")
        same, total = identical(run_dirs[0], reference)
        lines += [
            "",
            f"- `engine=sequential`: {ref_timing}; values (accuracy, macro-F1, AUROC) "
            f"identical to the batched engine's in {same:,} of {total:,} cells of evals.parquet",
        ]
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    command = "python experiments/portraits_triggers.py" + ("" if quick else " --full")
    plots = write_comparison(run_dirs, "portraits_triggers", quick, command).relative_to(OUT) / "plots"
    lines += [
        "",
        f"![composite accuracy]({plots}/composite.png)",
        f"![accuracy against cost]({plots}/pareto.png)",
    ]
    (OUT / f"report{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
