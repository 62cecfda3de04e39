"""How long ``prepare yearbook`` takes on a full-size Yearbook, and how large the cache is.

Real Yearbook files cannot be downloaded here, so this writes random portraits with Yearbook's per-year
counts (37,189 in all, from :func:`ctsim.datasets.portraits.yearbook_counts`) in Modyn's binary format
and in Wild-Time's pickle, prepares each through the real command, and writes the seconds and sizes to
``results/datasets/prepare_speed.json``::

    python experiments/prepare_speed.py [--size 1.0]
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ctsim.datasets.portraits import YEARS, yearbook_counts
from ctsim.datasets.prepare import main as prepare

REPO = Path(__file__).resolve().parents[1]


def write_sources(base: Path, size: float) -> tuple[Path, Path, int]:
    g = np.random.default_rng(0)
    bins, data, total = base / "bins", {}, 0
    bins.mkdir()
    for year, count in zip(YEARS, yearbook_counts()):
        n = max(10, round(count * size))
        total += n
        grey = g.integers(0, 256, size=(n, 32, 32), dtype=np.uint8)
        labels = g.integers(0, 2, size=n)
        images = np.repeat((grey.astype(np.float32) / 255)[:, None], 3, axis=1)  # (n, 3, 32, 32)
        records = np.empty((n, 12292), dtype=np.uint8)
        records[:, :4] = labels.astype(">i4").view(np.uint8).reshape(n, 4)
        records[:, 4:] = images.astype("<f4").reshape(n, -1).view(np.uint8)
        (bins / f"{year}.bin").write_bytes(records.tobytes())
        split = g.random(n) < 0.1
        hwc = images.transpose(0, 2, 3, 1)
        data[year] = {
            0: {"images": hwc[~split], "labels": labels[~split]},
            1: {"images": hwc[split], "labels": labels[split]},
        }
    pkl = base / "yearbook.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=4))
    return bins, pkl, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.0, help="share of Yearbook's per-year counts")
    args = parser.parse_args()
    out = REPO / "results" / "datasets"
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "samples": None,
        "size": args.size,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bins, pkl, results["samples"] = write_sources(base, args.size)
        for name, source, extra in (("modyn", bins, []), ("wildtime", pkl, ["--trust-pickle"])):
            root = base / f"root-{name}"
            start = time.perf_counter()
            assert prepare(["prepare", "yearbook", "--from", str(source), "--root", str(root), *extra]) == 0
            seconds = time.perf_counter() - start
            source_bytes = (
                sum(f.stat().st_size for f in source.rglob("*")) if source.is_dir() else source.stat().st_size
            )
            results[name] = {
                "prepare_s": round(seconds, 2),
                "source_MiB": round(source_bytes / 2**20, 1),
                "cache_MiB": round((root / "yearbook" / "data.pt").stat().st_size / 2**20, 1),
            }
    (out / "prepare_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
