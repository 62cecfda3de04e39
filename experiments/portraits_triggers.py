"""Case study: a trigger study on the portraits (27 pipelines in one process) and its accuracy-cost table.

    python experiments/portraits_triggers.py                      # size 0.1, 1 epoch: minutes on CPU
    python experiments/portraits_triggers.py --full               # full size (meant for a GPU)
    python experiments/portraits_triggers.py --compare            # and again with engine=sequential
    python experiments/portraits_triggers.py --run-dir DIR        # report on a run already made

Runs ``python -m ctsim experiment=portraits_triggers`` (time triggers every 1, 2, 5, 10 and 20 years,
amount triggers of 500, 1,000 and 5,000 samples, never; 3 seeds each) and writes
``results/reference/portraits_triggers/report[_reduced].md`` and its comparison
(``comparison[_reduced]/``, :mod:`ctsim.reports.compare`): per trigger policy the triggers, the
composite accuracy (mean ± sd over seeds), samples trained, training FLOPs and seconds, plus the run's
wall time. With ``--compare`` it runs the reference engine too and reports whether every accuracy
value in ``evals.parquet`` is identical.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import polars as pl
import torch
from study import REPO, run_experiment, size_flags, write_comparison

from ctsim.registry import load
from ctsim.reports.summary import pipeline_summary

OUT = REPO / "results" / "reference" / "portraits_triggers"
REDUCED = ["dataset.size=0.1", "train.epochs=1"]
KEYS = ["pipeline", "seed", "generation", "slice", "metric"]


def run(overrides: list[str], tag: str) -> tuple[Path, float]:
    return run_experiment("portraits_triggers", overrides, tag)


def table(run_dir: Path) -> pl.DataFrame:
    cost = load(run_dir)["cost"].collect()
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
    size_flags(parser, "dataset.size=0.1 train.epochs=1")
    parser.add_argument("--compare", action="store_true", help="run engine=sequential too and compare values")
    parser.add_argument("--run-dir", type=Path, help="report on this existing run instead of running")
    parser.add_argument("--seconds", type=float, help="with --run-dir: the wall time measured for it")
    parser.add_argument("overrides", nargs="*", help="more overrides for the run")
    args = parser.parse_args()
    args.reduced = not args.full
    overrides = (REDUCED if args.reduced else []) + args.overrides
    if args.run_dir:
        run_dir, seconds = args.run_dir, args.seconds
    else:
        run_dir, seconds = run(overrides, "batched")
    cost = load(run_dir)["cost"].collect()
    engine, device = cost["engine"][0], cost["device"][0]
    lines = [
        f"# portraits_triggers{' (reduced)' if args.reduced else ''}: 27 pipelines in one process",
        "",
        f"- command: `{' '.join(['python -m ctsim experiment=portraits_triggers', *overrides])}`",
        f"- engine {engine} on {device}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"- wall time of the command: {seconds:.0f} s" if seconds else "- wall time: not measured here",
        "",
        "Per trigger policy, means over 3 seeds: `accuracy` is the mean composite accuracy (the active",
        "model per slice), `samples_trained` selected samples × epochs, `train_tflops` measured with",
        "torch.utils.flop_counter.",
        "",
        *markdown(table(run_dir)),
    ]
    if args.compare:
        reference, ref_seconds = run([*overrides, "engine=sequential"], "sequential")
        same, total = identical(run_dir, reference)
        lines += [
            "",
            f"- `engine=sequential`: wall time {ref_seconds:.0f} s; values (accuracy, macro-F1, AUROC) "
            f"identical to the batched engine's in {same:,} of {total:,} cells of evals.parquet",
        ]
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_reduced" if args.reduced else ""
    for plot in ("composite.png", "cost_accuracy.png"):
        shutil.copy(run_dir / "plots" / plot, OUT / plot.replace(".png", f"{suffix}.png"))
    lines += [
        "",
        f"![composite accuracy](composite{suffix}.png)",
        f"![cost and accuracy](cost_accuracy{suffix}.png)",
    ]
    (OUT / f"report{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    command = "python experiments/portraits_triggers.py" + ("" if args.reduced else " --full")
    write_comparison(run_dir, "portraits_triggers", args.reduced, command)


if __name__ == "__main__":
    main()
