"""Try every bad input of ``tests/test_cli.py`` from a real command line and count the outcomes.

    python experiments/bad_inputs.py                         # this checkout
    python experiments/bad_inputs.py --code /path/to/other   # another checkout (e.g. an older commit)

Each input runs as ``python -m ctsim ARGS`` in a fresh folder that holds an earlier run and a user's
experiment files, and is classed as: ``clean error`` (exit code 2, a ``ctsim:`` message, no
traceback), ``traceback``, ``silent acceptance`` (the run started: exit 0 or still running after
``--timeout`` s), ``data lost`` (an earlier file changed) or ``other error`` (e.g. Hydra's exit 1).
``litter`` counts inputs that left a folder behind. Writes ``results/bad_inputs/<label>.json`` (one
record per input, with its seconds to answer) and prints the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_cli import BAD_INPUTS, user_folder  # noqa: E402  (the table and folder the tests use)


def digests(ws: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in ws.rglob("*") if p.is_file()}


def classify(rc: int | str, text: str, changed: bool) -> str:
    if changed:
        return "data lost"
    if "Traceback" in text:
        return "traceback"
    if rc in (0, "timeout"):
        return "silent acceptance"
    if rc == 2 and "ctsim:" in text:
        return "clean error"
    return f"other error (exit {rc})"


def try_one(label: str, argv: list[str], code: Path, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "w"
        ws.mkdir()
        user_folder(ws)
        before = digests(ws)
        args = [a.replace("{ws}", str(ws)) for a in argv]
        env = {**os.environ, "PYTHONPATH": str(code), "HYDRA_FULL_ERROR": "0"}
        start = time.perf_counter()
        try:
            r = subprocess.run(
                [sys.executable, "-m", "ctsim", *args],
                cwd=ws,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            rc, text = r.returncode, r.stderr + r.stdout
        except subprocess.TimeoutExpired as e:
            rc, text = "timeout", (e.stderr or b"").decode()
        seconds = time.perf_counter() - start
        after = digests(ws)
        extra = [
            p
            for p in ws.rglob("*")
            if p.is_dir() and p.relative_to(ws).parts[0] not in ("old_run", "my_conf")
        ]
        escaped = (ws / "../../escape").resolve()
        litter = bool(extra) or escaped.exists()
        shutil.rmtree(escaped, ignore_errors=True)
    changed = any(after.get(p) != d for p, d in before.items())
    return {
        "input": label,
        "argv": argv,
        "exit": rc,
        "outcome": classify(rc, text, changed),
        "litter": litter,
        "seconds": round(seconds, 2),
        "message": text.strip().splitlines()[-1:] if text.strip() else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose ctsim to run")
    parser.add_argument(
        "--label", default=None, help="names the output file (default: the checkout's folder)"
    )
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds before a run counts as accepted")
    args = parser.parse_args()
    records = []
    for label, (argv, _) in BAD_INPUTS.items():
        records.append(try_one(label, argv, args.code.resolve(), args.timeout))
        print(f"{records[-1]['outcome']:<20} {records[-1]['seconds']:>5.1f} s  {label}", flush=True)
    out = REPO / "results" / "bad_inputs" / f"{args.label or args.code.resolve().name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    counts = Counter(r["outcome"] for r in records)
    print(dict(counts), f"litter: {sum(r['litter'] for r in records)} of {len(records)}", f"→ {out}")


if __name__ == "__main__":
    main()
