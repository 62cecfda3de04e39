"""Case study: Modyn's Yearbook setup on the full portraits, and the drift its accuracy matrix shows.

    python experiments/portraits_yearly.py [extra overrides ...]

Runs ``python -m ctsim experiment=portraits_yearly`` (the command users run), then reads the run's
84 × 84 accuracy matrix and writes ``results/reference/portraits_yearly/report.md`` with:

* the lag profile (mean accuracy by slice − training slice): where the diagonal maxima lie;
* the drop across the 1970 change for models trained in the decade before it;
* the forgetting of the 1930s by the final model;

plus the run's accuracy-matrix heatmap. Extra overrides (``dataset.size=0.3``) pass through to the run;
the reference report in the repository comes from the full size on 2 CPU cores.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from ctsim.analysis import drift_report, pipeline_matrix
from ctsim.cli import unique_dir
from ctsim.datasets.portraits import HAIR_CHANGE_YEAR, YEARS
from ctsim.registry import load

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "results" / "reference" / "portraits_yearly"


def main(extra: list[str]) -> None:
    run_dir = Path(
        unique_dir(
            str(REPO / "results" / "runs" / "portraits_yearly" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
        )
    )
    command = [
        sys.executable,
        "-m",
        "ctsim",
        "experiment=portraits_yearly",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    seconds = time.perf_counter() - start

    tables = {k: v.collect() for k, v in load(run_dir).items()}
    matrix, trained = pipeline_matrix(tables["evals"], tables["generations"], "portraits_yearly", 0)
    report = drift_report(
        matrix, trained, change_slice=YEARS.index(HAIR_CHANGE_YEAR), window=10, early=range(10)
    )
    cost = tables["cost"].row(0, named=True)

    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "plots" / "matrix_portraits_yearly_seed0.png", OUT / "matrix.png")
    lines = [
        "# portraits_yearly: Modyn's Yearbook setup on the full portraits",
        "",
        f"- command: `{' '.join(['python -m ctsim experiment=portraits_yearly', *extra])}`",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {cost['device']}, torch {torch.__version__}",
        f"- wall time of the command: {seconds:.0f} s "
        f"(train {cost['train_s']:.0f} s, eval {cost['eval_s']:.0f} s)",
        f"- accuracy matrix: {matrix.shape[0]} generations × {matrix.shape[1]} slices; "
        f"mean composite accuracy {cost['composite_accuracy']:.3f}",
        "",
        "## What the matrix shows",
        "",
        *[f"- {line}" for line in report.lines()],
        "",
        "Lag = evaluation slice − the slice the generation's training data ended in; lag 0 is the diagonal.",
        "Drop: generations trained 1960-1969, on 1960-1969 vs 1970-1979. Forgetting: mean accuracy on",
        "1930-1939, best generation vs the final one.",
        "",
        "![accuracy matrix](matrix.png)",
    ]
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:-1]))
    print(f"\nwrote {OUT / 'report.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
