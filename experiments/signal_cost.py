"""What the trigger phase (drift signals and tests) and selection scoring cost against training.

    python experiments/signal_cost.py                                       # the quick drift study
    python experiments/signal_cost.py --experiment portraits_selection_quick
    python experiments/signal_cost.py --run-dir DIR --label before          # a run already made
    python experiments/signal_cost.py --compare DIR                         # and are its decisions DIR's?
    PYTHONPATH=OTHER_CHECKOUT python experiments/signal_cost.py --label before  # another version's code

Runs ``experiment=EXPERIMENT`` as ``python -m ctsim`` does (no checkpoints, no plots), with the run's
engine wrapped to count and time what reaches it, and appends one row to
``results/reference/bench/signal_cost.csv``:

* ``trigger_s``, ``selection_s``, ``train_s``: ``cost.parquet``'s seconds summed over the pipelines.
  A signal pass or MMD call shared by pipelines is split evenly among them, so ``trigger_s`` sums to
  the phase's wall time; a training job shared by pipelines is charged in full to each (each
  pipeline's cost is its own job's, as if it trained alone), so ``train_s`` is the population's
  training as if nothing were shared;
* ``train_calls_s``: the wall seconds of the engine's training calls, what the run really spent
  (equal to ``train_s`` when nothing is shared);
* ``trigger_per_train`` = ``trigger_s / train_s`` (the figure of issue 24 part 6, target ≤ 0.2),
  ``trigger_per_train_calls`` = ``trigger_s / train_calls_s``, ``selection_per_train``;
* ``jobs``: the jobs trained, of ``generations``; ``signal_requests``: the signal passes asked of
  the engine (one model over one set of rows);
* ``same_decisions_as``: with ``--compare DIR``, whether every generation was triggered at the same
  batch for the same reason (distances and p-values as printed) as in the run DIR.

Timings swing with the machine's load: compare ratios measured the same way, back to back.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "results" / "reference" / "bench" / "signal_cost.csv"
COLUMNS = [
    "label", "experiment", "code", "threads", "pipelines", "generations", "jobs", "signal_requests",
    "trigger_s", "selection_s", "train_s", "train_calls_s", "trigger_per_train", "trigger_per_train_calls",
    "selection_per_train", "wall_s", "same_decisions_as",
]  # fmt: skip
DECISION = ["pipeline", "seed", "generation", "trigger_batch", "trigger_reason"]


class Counted:
    """An engine that counts the jobs and signal requests it gets, and times its training calls."""

    def __init__(self, engine):
        self.engine, self.jobs, self.requests, self.train_seconds = engine, 0, 0, 0.0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def train(self, jobs, x, y):
        tick = time.perf_counter()
        try:
            return self.engine.train(jobs, x, y)
        finally:
            self.jobs += len(jobs)
            self.train_seconds += time.perf_counter() - tick

    def signals(self, requests, x, y=None):
        self.requests += len(requests)
        return self.engine.signals(requests, x, y)


def measure(experiment: str, overrides: list[str], out_dir: Path) -> dict:
    """Run ``experiment`` into ``out_dir`` with a counted engine; the row's counts and wall time."""
    from hydra import compose, initialize_config_dir

    from ctsim.app.build import build_run
    from ctsim.app.cli import CONF_DIR
    from ctsim.app.execute import execute

    args = [f"experiment={experiment}", "progress=false", "output.checkpoints=none", "output.plots=false"]
    args += overrides
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="signal_cost"):
        plan = build_run(compose("config", overrides=args), args)
    commit = code()  # before the run: the code it runs
    engine = Counted(plan.engine)
    plan = replace(plan, engine=engine)
    start = time.perf_counter()
    execute(plan, out_dir, echo=False)
    wall = time.perf_counter() - start
    counts = {"jobs": engine.jobs, "signal_requests": engine.requests, "train_calls_s": engine.train_seconds}
    return {"code": commit, **counts, "wall_s": wall}


def code() -> str:
    """The commit of the checkout whose ctsim runs (``PYTHONPATH``), or its folder outside git."""
    import ctsim

    folder = Path(ctsim.__file__).resolve().parent.parent
    git = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, cwd=folder, capture_output=True, text=True).stdout.strip() or str(folder)


def same_decisions(run_dir: Path, other: Path) -> bool:
    """Whether two runs trained the same generations at the same batches, for the same reasons."""
    a, b = (pl.read_parquet(d / "generations.parquet").select(DECISION) for d in (run_dir, other))
    return a.sort(DECISION[:3]).equals(b.sort(DECISION[:3]))


def row(run_dir: Path, label: str, experiment: str, extra: dict) -> dict:
    cost = pl.read_parquet(run_dir / "cost.parquet")
    gens = pl.read_parquet(run_dir / "generations.parquet")
    trigger, selection, train = (float(cost[c].sum()) for c in ("trigger_s", "selection_s", "train_s"))
    calls = extra.get("train_calls_s")
    return {
        "label": label,
        "experiment": experiment,
        "code": extra.get("code") or code(),
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "pipelines": cost.height,
        "generations": gens.height,
        "jobs": extra.get("jobs"),
        "signal_requests": extra.get("signal_requests"),
        "trigger_s": trigger,
        "selection_s": selection,
        "train_s": train,
        "train_calls_s": calls,
        "trigger_per_train": trigger / train,
        "trigger_per_train_calls": None if not calls else trigger / calls,
        "selection_per_train": selection / train,
        "wall_s": extra.get("wall_s"),
        "same_decisions_as": extra.get("same_decisions_as"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="portraits_drift_quick")
    parser.add_argument("--label", default="now", help="names the row (e.g. before, after)")
    parser.add_argument("--run-dir", type=Path, help="read this run's tables instead of running")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--compare", type=Path, help="a run folder whose decisions this run's must equal")
    parser.add_argument("overrides", nargs="*", help="more overrides of the run")
    args = parser.parse_args()
    if args.run_dir is not None:
        out_dir, extra = args.run_dir, {}
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="ctsim-signal-cost-")) / "run"
        extra = measure(args.experiment, args.overrides, out_dir)
    if args.compare is not None:
        same = same_decisions(out_dir, args.compare)
        extra["same_decisions_as"] = f"{args.compare}: {'yes' if same else 'NO'}"
    found = row(out_dir, args.label, args.experiment, extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.exists()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(found)
    for key in COLUMNS:
        value = found[key]
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
