"""The GPU check's figures in one page of markdown, from the JSON lines its steps wrote.

    python experiments/gpu_summary.py OUT_DIR > OUT_DIR/summary.md

Reads ``steps.jsonl``, ``numerics.jsonl``, ``syncs.jsonl``, ``bench.jsonl`` and ``profile.jsonl``
(whatever of them exists, however far they got) and prints: each step's limit, seconds and outcome;
per model kind the largest float32 and float64 difference between the engines at each step count, and
the ``CUDA_FLOAT32`` bound it suggests; syncs and ops per optimizer step; the bench's speed-ups over the
sequential engine, fractions of fp32 peak and compile times; the profile's tables. Uses the standard
library only, so it runs even where the check's wheels failed to install.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short when its step was stopped
            continue
    return rows


def table(header: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def suggested_bound(worst: float) -> float:
    """A power of ten at least twice the measured difference (never below 1e-6)."""
    return 10.0 ** max(-6, math.ceil(math.log10(2 * worst))) if worst > 0 else 1e-6


def steps_section(rows: list[dict]) -> list[str]:
    body = [[r["step"], r["limit_s"], r["seconds"], r.get("cpu_s"), r["rc"], r["status"]] for r in rows]
    header = ["step", "limit s", "seconds", "CPU s", "exit", "outcome"]
    return ["## Steps", "", *table(header, body), ""]


def numerics_section(rows: list[dict]) -> list[str]:
    diffs = [r for r in rows if r.get("table") == "difference"]
    if not diffs:
        return []
    worst = defaultdict(float)
    steps = defaultdict(list)
    for r in diffs:
        key = (r["dtype"], r["epochs_factor"], r["kind"])
        worst[key] = max(worst[key], r["difference"])
        steps[key].append(r["steps"])
    tests_factor = min(r["epochs_factor"] for r in diffs)
    body = []
    for key in sorted(worst):
        dtype, factor, kind = key
        bound = suggested_bound(worst[key]) if (dtype, factor) == ("float32", tests_factor) else None
        span = f"{min(steps[key])}-{max(steps[key])}"
        body.append([kind, dtype, span, worst[key], None if bound is None else f"{bound:.0e}"])
    lines = [
        f"## Numerics: batched vs sequential on {diffs[0]['device_name']}",
        "",
        "Largest difference over each job's parameters, buffers and optimizer state (float32: relative to",
        "each tensor's largest value; float64: absolute). The suggested bound is for `CUDA_FLOAT32` in",
        "tests/test_engine_equivalence.py, whose jobs take the first step count.",
        "",
        *table(["kind", "dtype", "steps", "largest difference", "suggested bound"], body),
        "",
    ]
    mem = [r for r in rows if r.get("table") == "memory"]
    if mem:
        body = [
            [
                r["kind"],
                r["models"],
                r["measured_bytes_per_model"] / 2**20,
                r["estimated_bytes_per_model"] / 2**20,
                r["estimate_over_measured"],
            ]
            for r in mem
        ]
        header = ["kind", "models", "measured MiB/model", "estimated MiB/model", "estimate/measured"]
        lines += ["Memory of one stacked training call:", "", *table(header, body), ""]
    return lines


def syncs_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    body = [
        [
            r["kind"],
            r["data"],
            r["models"],
            f"{r['steps_short']}/{r['steps_long']}",
            r["syncs_per_step"],
            r["host_reads_per_step"],
            r["ops_per_step"],
        ]
        for r in rows
    ]
    header = ["kind", "data", "models", "steps", "syncs/step", "host reads/step", "ops/step"]
    return [
        "## Syncs and ops per optimizer step (difference of two train calls, setup cancelled)",
        "",
        *table(header, body),
        "",
    ]


def bench_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    sequential = {
        (r["case"], r["models"], r["phase"]): r["samples_per_s"] for r in rows if r["engine"] == "sequential"
    }
    body = []
    for r in rows:
        base = sequential.get((r["case"], r["models"], r["phase"]))
        body.append(
            [
                r["case"],
                r["engine"],
                r["phase"],
                r["models"],
                r["seconds"],
                r["ms_per_step"],
                r["samples_per_s"],
                None if not base else r["samples_per_s"] / base,
                None if r["peak_fraction"] is None else 100 * r["peak_fraction"],
                r["warmup_s"],
            ]
        )
    header = [
        "case",
        "engine",
        "phase",
        "models",
        "seconds",
        "ms/step",
        "samples/s",
        "× sequential",
        "% fp32 peak",
        "warm-up s",
    ]
    return [f"## Bench on {rows[0]['device_name']}", "", *table(header, body), ""]


def profile_section(rows: list[dict]) -> list[str]:
    """The profile's four parts (experiments/gpu_profile.py), whichever of them ran."""
    if not rows:
        return []
    lines = [f"## Profile of a stacked step on {rows[0]['device_name']}", ""]
    settings = [r for r in rows if r.get("table") == "settings"]
    sequential = next((r for r in settings if (r["engine"], r["setting"]) == ("sequential", "default")), None)
    if settings:
        body = []
        for r in settings:
            if r["engine"] == "sequential":
                body.append(
                    [
                        r["setting"],
                        r["engine"],
                        r["models"],
                        r["ms_per_model_step"],
                        None,
                        None,
                        r["population_seconds"],
                    ]
                )
                continue
            base = None if sequential is None else sequential["population_seconds"] / r["seconds"]
            peak = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
            body.append([r["setting"], r["engine"], r["models"], r["ms_per_step"], peak, base, r["seconds"]])
        header = [
            "setting",
            "engine",
            "models",
            "ms/step (sequential: per model-step)",
            "% fp32 peak",
            "× sequential (default)",
            "seconds (sequential: for the whole population)",
        ]
        lines += [*table(header, body), ""]
    for r in (r for r in rows if r.get("table") == "profile"):
        busy = None if r["device_busy"] is None else f"{100 * r['device_busy']:.0f}%"
        lines += [
            f"Profiled call: {r['steps']} steps of {r['models']} models, {r['ms_per_step']:.1f} "
            f"ms/step under the profiler, {r['kernels_per_step']:.0f} kernels/step, device busy "
            f"{busy}.",
            "",
        ]
        # operators and the kernels they launch are listed side by side (a kernel's time is also its
        # operator's), so no shares: they would add up to more than the whole
        body = [[t["op"][:80], t["calls"], t["device_ms"]] for t in r["top"][:10]]
        lines += [*table(["operator or kernel", "calls", "device ms"], body), ""]
    steps = [r for r in rows if r.get("table") == "vmap_step"]
    if steps:
        body = [[r.get("tf32"), r["models"], r["ms_per_step"], r["kernels_per_step"]] for r in steps]
        lines += [
            "The bare stacked gradient, `vmap(grad(loss))`, no optimizer or bookkeeping:",
            "",
            *table(["tf32", "models", "ms/step", "kernels/step"], body),
            "",
        ]
    conv = [r for r in rows if r.get("table") == "conv"]
    for tf32 in dict.fromkeys(r.get("tf32") for r in conv):
        these = [r for r in conv if r.get("tf32") == tf32]
        ways = list(dict.fromkeys(r["way"] for r in these))
        ms = {(r["block"], r["way"]): r["ms"] for r in these}
        blocks = sorted({r["block"] for r in these})
        body = [[b, *(ms.get((b, w)) for w in ways)] for b in blocks]
        body.append(["all", *(sum(ms.get((b, w), 0.0) for b in blocks) for w in ways)])
        lines += [
            f"YearbookNet's convolutions at {these[0]['models']} models, forward + backward, "
            f"tf32 {tf32}, ms:",
            "",
            *table(["block", *ways], body),
            "",
        ]
    return lines


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path("results/gpu")
    lines = ["# GPU check", ""]
    lines += steps_section(read(out / "steps.jsonl"))
    lines += numerics_section(read(out / "numerics.jsonl"))
    lines += syncs_section(read(out / "syncs.jsonl"))
    lines += bench_section(read(out / "bench.jsonl"))
    lines += profile_section(read(out / "profile.jsonl"))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
