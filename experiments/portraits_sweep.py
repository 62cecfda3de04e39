"""Case study: a 2 × 3 Hydra sweep (time and amount triggers × 3 seeds) on the portraits, through a launcher,
ending with its comparison.

    python experiments/portraits_sweep.py --launcher joblib           # 2 local processes at a time
    python experiments/portraits_sweep.py --launcher submitit_local   # submitit's jobs on this machine
    python experiments/portraits_sweep.py --launcher basic --full     # Hydra's own, at full size

Runs ``python -m ctsim -m experiment=portraits_yearly trigger=time,amount 'population.seeds=[0],[1],[2]'
hydra/launcher=...`` (reduced: a tenth of the data, one epoch; each job gets one CPU thread), whose
Hydra callback writes ``<sweep folder>/comparison/``, and copies that comparison to
``results/reference/portraits_sweep/<launcher>[_reduced]/`` with the command in a README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime

from study import REFERENCE_LEAVES_OUT, REPO, size_flags

from ctsim.app.cli import unique_dir

REDUCED = ["dataset.size=0.1", "train.epochs=1"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="joblib")
    size_flags(parser, " ".join(REDUCED))
    args = parser.parse_args()
    reduced = not args.full
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = unique_dir(
        str(REPO / "results" / "multiruns" / "portraits_sweep" / f"{stamp}_{args.launcher}")
    )
    overrides = [
        "experiment=portraits_yearly",
        "trigger=time,amount",
        "population.seeds=[0],[1],[2]",
        "progress=false",
        *(REDUCED if reduced else []),
        *LAUNCHERS[args.launcher],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.launcher != "basic" else None
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ctsim", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - start
    out = (
        REPO / "results" / "reference" / "portraits_sweep" / (args.launcher + ("_reduced" if reduced else ""))
    )
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(f"{sweep_dir}/comparison", out)
    (out / "report.html").unlink()  # see REFERENCE_LEAVES_OUT
    # the runs as paths in the repository, not this machine's
    (out / "compare.md").write_text((out / "compare.md").read_text().replace(f"{REPO}/", ""))
    threads = "OMP_NUM_THREADS=1 " if env else ""
    shown = " ".join(f"'{o}'" if "[" in o else o for o in overrides)
    (out / "README.md").write_text(
        f"# A 2 × 3 sweep through `{args.launcher}`{' (reduced)' if reduced else ''}\n\n"
        f"`{threads}python -m ctsim -m {shown}` (from `python experiments/portraits_sweep.py "
        f"--launcher {args.launcher}{'' if reduced else ' --full'}`), wall time {wall:.0f} s on this "
        "machine. The sweep's Hydra callback wrote this comparison into the sweep folder (not committed); "
        f"it is copied here. See compare.md and plots/. {REFERENCE_LEAVES_OUT}\n"
    )
    print(f"wrote {out.relative_to(REPO)}/ (sweep wall time {wall:.0f} s)")


if __name__ == "__main__":
    main()
