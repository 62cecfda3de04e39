"""Case study: Modyn's Yearbook setup on the full portraits, and the drift its accuracy matrix shows.

    python experiments/portraits_yearly.py [extra overrides ...]          # the quick form: 3 seeds
    python experiments/portraits_yearly.py --full [extra overrides ...]   # full size, one seed

Runs ``python -m ctsim experiment=portraits_yearly_quick`` (``--full``: ``experiment=portraits_yearly``,
the command users run), then reads the run's
84 × 84 accuracy matrix and writes ``results/reference/portraits_yearly/report.md`` with:

* the lag profile (mean accuracy by slice − training slice): where the diagonal maxima lie;
* the drop across the 1970 change for models trained in the decade before it;
* the forgetting of the 1930s by the final model;

plus the run's accuracy-matrix heatmap, and the comparison of its seeds
(``comparison[_quick]/``, :mod:`ctsim.reports.compare`): the baseline the other studies compare
with. Extra overrides (``dataset.size=0.3``) pass through to the run; the reference ``report.md``
comes from the full size on 2 CPU cores, ``report_quick.md`` from the quick form.
"""

from __future__ import annotations

import argparse
import platform
import shutil

import torch
from study import REPO, commit, experiment_name, quick_knobs, run_experiment, size_flags, write_comparison

from ctsim.datasets.portraits import HAIR_CHANGE_YEAR, YEARS
from ctsim.measure.metrics import pipeline_matrix
from ctsim.registry import load
from ctsim.reports.analysis import drift_report

OUT = REPO / "results" / "reference" / "portraits_yearly"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_flags(parser, quick_knobs("portraits_yearly"))
    parser.add_argument("overrides", nargs="*", help="more overrides for the run")
    args = parser.parse_args()
    quick = not args.full
    experiment = experiment_name("portraits_yearly", args.full)
    run_dir, timing = run_experiment(experiment, args.overrides, "quick" if quick else "full", args.into)
    suffix = "_quick" if quick else ""

    tables = {k: v.collect() for k, v in load(run_dir).items()}
    matrix, trained = pipeline_matrix(tables["evals"], tables["generations"], experiment, 0)
    report = drift_report(
        matrix, trained, change_slice=YEARS.index(HAIR_CHANGE_YEAR), window=10, early=range(10)
    )
    cost = tables["cost"].row(0, named=True)

    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "plots" / f"matrix_{experiment}_seed0.png", OUT / f"matrix{suffix}.png")
    knobs = quick_knobs("portraits_yearly")
    lines = [
        "# portraits_yearly: Modyn's Yearbook setup" + (f" (quick form: {knobs})" if quick else ""),
        "",
        f"- command: `{' '.join([f'python -m ctsim experiment={experiment}', *args.overrides])}`",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {cost['device']}, torch {torch.__version__}; commit {commit()}",
        f"- {timing} for the command (seed 0: train {cost['train_s']:.0f} s, eval {cost['eval_s']:.0f} s)",
        f"- accuracy matrix: {matrix.shape[0]} generations × {matrix.shape[1]} slices; "
        f"mean composite accuracy {cost['composite_accuracy']:.3f} (seed 0)",
        "",
        "## What the matrix shows",
        "",
        *[f"- {line}" for line in report.lines()],
        "",
        "Lag = evaluation slice − the slice the generation's training data ended in; lag 0 is the diagonal.",
        "Drop: generations trained 1960-1969, on 1960-1969 vs 1970-1979. Forgetting: mean accuracy on",
        "1930-1939, best generation vs the final one.",
        "",
        f"![accuracy matrix](matrix{suffix}.png)",
    ]
    (OUT / f"report{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:-1]))
    print(f"\nwrote {OUT / f'report{suffix}.md'}")
    command = "python experiments/portraits_yearly.py" + ("" if quick else " --full")
    write_comparison(run_dir, "portraits_yearly", quick, command + "".join(f" {o}" for o in args.overrides))


if __name__ == "__main__":
    main()
