"""What resume costs: the reduced trigger study, uninterrupted, then killed (SIGKILL) half-way and resumed.

    python experiments/resume_cost.py [--kill-at 0.5] [--baseline-code OTHER_CHECKOUT]

Writes ``results/registry/resume_cost.json``: the uninterrupted run's wall seconds, when the kill came,
the resume's wall seconds (process start to exit, so imports and data loading included), the seconds
the resume saved against starting again, and whether every table equals the uninterrupted run's (the
seconds columns left out). With ``--baseline-code``, the same command from another checkout (one
without the journal) gives the cost of writing as the run goes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

REPO = Path(__file__).resolve().parent.parent
STUDY = [
    "experiment=portraits_triggers",
    "dataset.size=0.1",
    "train.epochs=1",
    "progress=false",
    "output.plots=false",
]
TIMING = ("train_s", "trigger_s", "selection_s", "eval_s", "total_s")
TABLES = ("evals", "generations", "cost", "lineage", "quality", "skipped")


def command(args: list[str], cwd: Path, code: Path = REPO) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.Popen(
        [sys.executable, "-m", "ctsim", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL
    )


def timed(args: list[str], cwd: Path, code: Path = REPO) -> float:
    start = time.perf_counter()
    assert command(args, cwd, code).wait() == 0
    return time.perf_counter() - start


def same_tables(a: Path, b: Path) -> bool:
    for t in TABLES:
        x, y = pl.read_parquet(a / f"{t}.parquet"), pl.read_parquet(b / f"{t}.parquet")
        try:
            assert_frame_equal(x.drop(TIMING, strict=False), y.drop(TIMING, strict=False), check_exact=True)
        except AssertionError:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of the decision points saved")
    parser.add_argument("--baseline-code", type=Path, help="a checkout without the journal, for its overhead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctsim-resume-"))
    data = [f"dataset.root={work / 'datasets'}"]
    timed([*STUDY, *data, f"hydra.run.dir={work / 'warm'}"], work)  # generates the data once
    whole = timed([*STUDY, *data, f"hydra.run.dir={work / 'whole'}"], work)
    points = len(pl.read_parquet(work / "whole" / "generations.parquet")["trigger_batch"].unique())

    killed = work / "killed"
    start = time.perf_counter()
    proc = command([*STUDY, *data, f"hydra.run.dir={killed}"], work)
    while len(list((killed / "journal").glob("point-*.parquet"))) < args.kill_at * points:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - start
    saved = len(list((killed / "journal").glob("point-*.parquet")))
    resumed = timed(["resume", str(killed)], work)
    report = {
        "command": "python -m ctsim " + " ".join(STUDY),
        "decision_points_that_trained": points,
        "uninterrupted_s": round(whole, 1),
        "killed_after_s": round(killed_after, 1),
        "points_saved_at_kill": saved,
        "resume_s": round(resumed, 1),
        "saved_against_starting_again_s": round(whole - resumed, 1),
        "killed_plus_resume_minus_uninterrupted_s": round(killed_after + resumed - whole, 1),
        "tables_equal_except_seconds": same_tables(killed, work / "whole"),
    }
    if args.baseline_code:
        report["baseline_code"] = str(args.baseline_code)
        report["baseline_uninterrupted_s"] = round(
            timed([*STUDY, *data, f"hydra.run.dir={work / 'baseline'}"], work, args.baseline_code), 1
        )
    out = REPO / "results" / "registry" / "resume_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
