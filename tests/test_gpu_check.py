"""The GPU check's own machinery, on CPU: time boxes, results written as they are measured, the summary.

The whole check runs in CI as ``GPU_CHECK_DRY=1 bash experiments/gpu_check.sh`` (.ci/run), with the
wheels it carries downloaded first; these tests need no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from ctsim.app.bench import main as bench_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import gpu_summary  # noqa: E402
import gpu_syncs  # noqa: E402


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The check's dry run in this environment (polars and hydra installed: no wheels), into tmp_path/out."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "OUT" and not k.startswith("GPU_CHECK_")},
        "GPU_CHECK_DRY": "1",
        "GPU_CHECK_PYTHON": sys.executable,
        "GPU_CHECK_WHEELS": "",
        "PYTHONPATH": str(REPO),
        **settings,
    }
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(REPO / "experiments/gpu_check.sh"), str(out)], env=env, capture_output=True, text=True
    )
    return done, out


def test_a_step_that_hits_its_box_is_recorded_and_the_next_step_runs(tmp_path):
    done, out = _check(
        tmp_path,
        GPU_CHECK_ONLY="numerics,bench_eval",
        GPU_CHECK_BOX_numerics="1",
        GPU_CHECK_BOX_bench_eval="1",
    )
    assert done.returncode == 1, done.stdout + done.stderr  # two steps stopped: the check reports failure
    steps = {r["step"]: r for r in _lines(out / "steps.jsonl")}
    assert list(steps) == ["setup", "numerics", "bench_eval"]
    assert steps["setup"]["status"] == "ok", done.stdout
    for name in ("numerics", "bench_eval"):
        assert (steps[name]["limit_s"], steps[name]["rc"], steps[name]["status"]) == (1, 124, "timed_out")
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert files == ["gpu_check.log", "results.tar.gz", "steps.jsonl", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "| numerics | 1 |" in summary and "timed_out" in summary
    assert "== bench_eval: timed_out (exit 124)" in (out / "gpu_check.log").read_text()


def test_bench_appends_each_row_as_a_json_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    args = ["--cases", "launch", "eval", "--models", "1", "2", "--device", "cpu", "--out", str(tmp_path)]
    frames = bench_main([*args, "--eval-models", "2", "--eval-samples", "32", "--jsonl", str(rows)])
    logged = pl.DataFrame(_lines(rows))
    csv = pl.concat([frames["launch"], frames["eval"]])
    assert logged.height == csv.height == 6 + 3  # launch: 3 engines × 2 population sizes; eval: 3 engines
    columns = ["case", "engine", "models", "seconds", "samples"]
    assert logged.select(columns).rows() == csv.select(columns).rows()
    assert set(frames["eval"]["samples"]) == {2 * 32}  # --eval-samples: 2 models × 32 samples


def test_syncs_and_ops_are_counted_per_step_without_the_calls_setup():
    spec = gpu_syncs.KINDS["mlp"]
    x, y = gpu_syncs._data(spec, n=1024)
    x = x.float()
    populations = [gpu_syncs.equal_jobs("mlp", models, 1024) for models in (2, 6)]
    rows = [gpu_syncs.per_step("mlp", "equal", jobs, x, y, "cpu") for jobs in populations]
    for row in rows:
        assert (row["steps_short"], row["steps_long"]) == (32, 64)
        assert row["syncs_per_step"] is None  # CUDA only
        # a whole call costs more than its steps: stacking, the plan, unstacking
        assert row["ops_short"] > 32 * row["ops_per_step"] > 0
    # per step, a stacked call costs the same whatever the population size (within an op)
    assert abs(rows[0]["ops_per_step"] - rows[1]["ops_per_step"]) <= 1
    assert rows[0]["host_reads_per_step"] == rows[1]["host_reads_per_step"] <= 1


def test_summary_suggests_a_bound_and_computes_speedups(tmp_path):
    common = {"device": "cuda", "device_name": "NVIDIA H200", "relative": True, "status": "ok/ok"}
    numerics = [
        {
            **common,
            "table": "difference",
            "kind": "mlp",
            "dtype": "float32",
            "epochs_factor": f,
            "job": j,
            "steps": 100 * f + j,
            "difference": d,
        }
        for f, j, d in [(1, 0, 1e-6), (1, 1, 3e-5), (4, 0, 2e-4)]
    ]
    bench = [
        {
            "case": "populations",
            "engine": e,
            "phase": "train",
            "models": 256,
            "seconds": 1.0,
            "ms_per_step": 1.0,
            "samples_per_s": s,
            "peak_fraction": p,
            "warmup_s": 0.0,
            "device_name": "NVIDIA H200",
        }
        for e, s, p in [("sequential", 100.0, 0.01), ("batched/vmap", 3000.0, 0.3)]
    ]
    for name, rows in (("numerics", numerics), ("bench", bench)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut sho')
    text = "\n".join(
        gpu_summary.numerics_section(gpu_summary.read(tmp_path / "numerics.jsonl"))
        + gpu_summary.bench_section(gpu_summary.read(tmp_path / "bench.jsonl"))
    )
    assert "| mlp | float32 | 100-101 | 3e-05 | 1e-04 |" in text  # 2 × 3e-5, rounded up to a power of ten
    assert "| mlp | float32 | 400-400 | 0.0002 |  |" in text
    assert "| populations | batched/vmap | train | 256 | 1 | 1 | 3e+03 | 30 | 30 | 0 |" in text
    assert torch.isfinite(torch.tensor(gpu_summary.suggested_bound(0.0)))


# What experiments/gpu_wheels.sh downloaded for polars 2.1.0 and hydra-core 1.3.8 (5 wheels, 52 MiB), plus
# 2 MiB for a newer polars: a device run carries the working tree and the wheels in 64 MiB.
WHEELS_MIB = 54


def test_the_tracked_tree_leaves_room_for_the_wheels_a_gpu_run_carries():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = [REPO / name.decode() for name in listed if name]
    sizes = {str(f.relative_to(REPO)): f.stat().st_size for f in files if f.is_file()}
    total = sum(sizes.values())
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert total <= (64 - WHEELS_MIB) * 2**20, (
        f"the tracked files hold {total / 2**20:.1f} MiB; with the wheels ({WHEELS_MIB} MiB) a GPU run "
        f"could not carry them in 64 MiB. Biggest: {biggest}"
    )


def test_the_profile_step_is_left_out_of_the_whole_check(tmp_path):
    # a budget of 1 s skips every step, and records each step the check would have run
    done, out = _check(tmp_path, GPU_CHECK_BUDGET="1")
    steps = [r["step"] for r in _lines(out / "steps.jsonl")]
    assert done.returncode == 1  # a dry run fails on a skipped step
    assert steps == [
        "setup",
        "numerics",
        "syncs",
        "bench_256",
        "bench_eval",
        "triggers",
        "bench_sizes",
        "compile",
        "cuda_tests",
    ]


def test_the_profile_step_writes_each_part_it_is_asked_for(tmp_path):
    done, out = _check(tmp_path, GPU_CHECK_ONLY="profile", GPU_CHECK_PROFILE_PARTS="conv vmap_step")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["step"] for r in _lines(out / "steps.jsonl")] == ["setup", "profile"]
    rows = _lines(out / "profile.jsonl")
    conv = [r for r in rows if r["table"] == "conv"]
    ways = {"grouped", "grouped_nhwc", "unfold_matmul", "shared_weights"}
    assert {(r["block"], r["way"], r["tf32"]) for r in conv} == {
        (b, w, t) for b in range(4) for w in ways for t in (False, True)
    }
    assert all(r["ms"] > 0 and r["models"] == 4 for r in conv)
    assert [(r["table"], r["tf32"]) for r in rows if r["table"] != "conv"] == [
        ("vmap_step", False),
        ("vmap_step", True),
    ]
    assert not any(r["table"] == "settings" for r in rows)  # a part not asked for does not run
    summary = (out / "summary.md").read_text()
    assert "forward + backward, tf32 False" in summary and "`vmap(grad(loss))`" in summary


def test_the_profile_summary_puts_each_setting_beside_the_sequential_engine():
    common = {"device": "cuda", "device_name": "NVIDIA H200", "table": "settings", "models": 256}
    rows = [
        {
            **common,
            "setting": "default",
            "engine": "batched/vmap",
            "ms_per_step": 140.0,
            "seconds": 2.8,
            "peak_fraction": 0.034,
            "steps": 20,
        },
        {
            **common,
            "setting": "tf32",
            "engine": "batched/vmap",
            "ms_per_step": 100.0,
            "seconds": 2.0,
            "peak_fraction": 0.048,
            "steps": 20,
        },
        {
            **common,
            "setting": "default",
            "engine": "sequential",
            "models": 16,
            "ms_per_model_step": 6.0,
            "population_seconds": 30.0,
            "steps": 20,
        },
    ]
    text = "\n".join(gpu_summary.profile_section(rows))
    # × sequential: the sequential engine's time for the whole population over the batched call's
    assert "| default | batched/vmap | 256 | 140 | 3.4 | 10.7 | 2.8 |" in text
    assert "| tf32 | batched/vmap | 256 | 100 | 4.8 | 15 | 2 |" in text
    assert "| default | sequential | 16 | 6 |  |  | 30 |" in text
