#!/usr/bin/env bash
# The engine's GPU check, built to run on a bare GPU machine the first time, in under 8 minutes.
#   bash experiments/gpu_wheels.sh                  # here, once (needs PyPI): the wheels, into .gpu_wheels/
#   bash experiments/gpu_check.sh [OUT_DIR]         # on the GPU machine (OUT_DIR: $OUT, else results/gpu)
#   GPU_CHECK_DRY=1 bash experiments/gpu_check.sh   # the same steps on CPU at tiny sizes (results/gpu_dry)
#
# It installs the carried wheels (polars, hydra-core, ...) offline into a folder of its own, with the
# interpreter that holds torch (python3 on the GPU image), then runs these steps, each time-boxed:
#   setup        the device, the interpreter, the wheels installed, ctsim importable (always runs)
#   numerics     batched vs sequential per model kind and step count, float32 and float64, and memory
#                against the engine's estimate (experiments/gpu_numerics.py)
#   syncs        host-device synchronisations and ops per optimizer step (experiments/gpu_syncs.py)
#   bench_256    256 YearbookNets, 80 optimizer steps per train call, batched vs sequential (ctsim.app.bench)
#   bench_eval   1,000 models predicting portraits-size test data (84 slices)
#   triggers     the full portraits_triggers study, with every second the steps before left over
#   bench_sizes  1, 8 and 64 YearbookNets; the launch-bound and small-MLP cases
#   compile      torch.compile at 64 YearbookNets (one graph to compile)
#   cuda_tests   pytest -m gpu on the equivalence tests, in whatever time is left
# and one step that runs only when GPU_CHECK_ONLY names it:
#   profile      where a stacked step of 256 YearbookNets spends its time: the engine's speed settings
#                (TF32, cuDNN benchmark, bf16), a torch.profiler table, the bare vmap(grad) step and
#                four ways to convolve, TF32 off and on (experiments/gpu_profile.py; about 95 s on an H200)
# Each step's box is kept for it: the boxes sum to 455 s of a 475 s budget (the rest: archiving, a
# stopped step's grace). A step that finishes early leaves its time to the trigger study and the CUDA
# tests; a step that hits its box is stopped, recorded as timed out, and the next one runs.
# Results are written as they are measured, into 7 files in OUT_DIR, 8 with the profile (a GPU machine
# returns 8 at most):
#   gpu_check.log   everything printed
#   steps.jsonl     one line per step: limit, seconds, CPU seconds, exit status, outcome
#   numerics.jsonl, syncs.jsonl, bench.jsonl, profile.jsonl: one line per measurement, appended when it
#                   is measured
#   summary.md      the figures (experiments/gpu_summary.py), remade after each step
#   results.tar.gz  the bench CSVs and plots, the study's run folder, the tests' report (remade likewise)
# Settings (environment variables):
#   GPU_CHECK_ONLY=step,step   run only these steps (and setup), e.g. to rerun one
#   GPU_CHECK_TESTS=expr       the CUDA tests pytest -k selects (default: all of them)
#   GPU_CHECK_PROFILE_PARTS="conv vmap_step"   the profile's parts (default: all four)
#   GPU_CHECK_NUMERICS="--kinds lstm gru --factors 4"   other arguments for the numerics step
#   GPU_CHECK_BOX_<step>=s     another box for a step;  GPU_CHECK_BUDGET=s  another budget (475)
#   GPU_CHECK_SCALE=n          multiply the budget and boxes (a dry run: 4, for slow or shared CI machines)
#   GPU_CHECK_WHEELS=dir       the wheels (default .gpu_wheels; empty: install nothing)
#   GPU_CHECK_PYTHON=path      the interpreter (default: the first of python3, /opt/torch/.venv/bin/python3,
#                              python that imports torch). A dry run without it makes a fresh venv from
#                              that one, less polars, hydra and ctsim, as on the GPU image.
# Exit status: 0 when every step that ran exited 0, or 3 for the compile step on a torch without bounded
# compilation (recorded as unsupported; a dry run also fails on a skipped step or more than
# 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_CHECK_REPO=$PWD
export GPU_CHECK_DRY=${GPU_CHECK_DRY:-0}
if [ "$GPU_CHECK_DRY" = 1 ]; then default_out=results/gpu_dry; else default_out=results/gpu; fi
export GPU_CHECK_OUT=${1:-${OUT:-$default_out}}
wheels=${GPU_CHECK_WHEELS-.gpu_wheels}
budget=${GPU_CHECK_BUDGET:-475}
only=${GPU_CHECK_ONLY:-}
mkdir -p "$GPU_CHECK_OUT"
GPU_CHECK_OUT=$(cd "$GPU_CHECK_OUT" && pwd)
rm -f "$GPU_CHECK_OUT"/{gpu_check.log,steps.jsonl,numerics.jsonl,syncs.jsonl,bench.jsonl,profile.jsonl} \
    "$GPU_CHECK_OUT"/{summary.md,results.tar.gz}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch" "$scratch.tgz"' EXIT
export GPU_CHECK_RESULTS=$scratch/results # what goes into results.tar.gz
mkdir -p "$GPU_CHECK_RESULTS"
exec > >(tee -a "$GPU_CHECK_OUT/gpu_check.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 MPLBACKEND=Agg
start=$(date +%s)
if [ "$GPU_CHECK_DRY" = 1 ]; then
    export GPU_CHECK_DEVICE=cpu
    # tiny models gain nothing from threads, and spinning ones burn a shared CI machine's CPU
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
else
    export GPU_CHECK_DEVICE=cuda
fi

# Steps in order, with their boxes in seconds (the two stretched ones: their least; they also take
# what earlier steps left).
steps=(setup numerics syncs bench_256 bench_eval triggers bench_sizes compile profile cuda_tests)
declare -A box=([setup]=20 [numerics]=65 [syncs]=35 [bench_256]=90 [bench_eval]=30 [triggers]=95
    [bench_sizes]=35 [compile]=85 [profile]=150 [cuda_tests]=0)
declare -A stretch=([triggers]=1 [cuda_tests]=1)
declare -A optional=([profile]=1) # only when GPU_CHECK_ONLY names it
if [ "$GPU_CHECK_DRY" = 1 ]; then scale=${GPU_CHECK_SCALE:-4}; else scale=${GPU_CHECK_SCALE:-1}; fi
budget=$((budget * scale))
for s in "${steps[@]}"; do
    override=GPU_CHECK_BOX_$s
    box[$s]=${!override:-$((box[$s] * scale))}
done
selected() {
    [ "$1" = setup ] || [[ ",$only," == *",$1,"* ]] || { [ -z "$only" ] && [ -z "${optional[$1]:-}" ]; }
}

find_python() {
    if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
        echo "$GPU_CHECK_PYTHON"
        return
    fi
    for c in python3 /opt/torch/.venv/bin/python3 python; do
        if command -v "$c" > /dev/null && "$c" -c "import torch" 2> /dev/null; then
            command -v "$c"
            return
        fi
    done
    echo "gpu_check: no python3 that imports torch" >&2
    return 1
}

# A venv shaped like the GPU image: it sees the packages of the interpreter that holds torch, through
# links, less polars, hydra and the rest that the check carries as wheels (and less ctsim: the image has no
# installed ctsim; the check imports it from the checkout).
image_like_venv() {
    local base=$1 env=$2
    "$base" - "$env/links" << 'EOF' || return 1
import os, sys
from pathlib import Path

links = Path(sys.argv[1])
links.mkdir(parents=True)
carried = ("polars", "_polars", "hydra", "omegaconf", "antlr4", "ctsim", "__editable__", "_ctsim")
for d in [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]:
    for entry in os.listdir(d):
        if entry.lower().startswith(carried) or entry.endswith(".pth") or (links / entry).exists():
            continue
        (links / entry).symlink_to(Path(d) / entry)
EOF
    "$base" -m venv --without-pip "$env/venv" || return 1
    local purelib
    purelib=$("$env/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$env/links" > "$purelib/image_packages.pth"
    echo "$env/venv/bin/python"
}

py=$(find_python) || exit 1
export GPU_CHECK_FRESH_VENV=0
if [ "$GPU_CHECK_DRY" = 1 ] && [ -z "${GPU_CHECK_PYTHON:-}" ]; then
    GPU_CHECK_FRESH_VENV=1
    py=$(image_like_venv "$py" "$scratch/env") || {
        echo "gpu_check: could not make the dry run's venv" >&2
        exit 1
    }
fi
export GPU_CHECK_PY=$py
export GPU_CHECK_SITE=$scratch/site
export GPU_CHECK_WHEEL_DIR=$wheels
export PYTHONPATH="$GPU_CHECK_SITE:$GPU_CHECK_REPO"
echo "== gpu_check: $(date -u +%FT%TZ), python $py, device $GPU_CHECK_DEVICE, out $GPU_CHECK_OUT," \
    "budget $budget s"

run_setup() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2> /dev/null ||
        echo "(no nvidia-smi)"
    "$GPU_CHECK_PY" -c "import sys; print(sys.version)" || return 1
    if "$GPU_CHECK_PY" -c "import polars" 2> /dev/null; then
        echo "polars is importable before the wheels are installed"
        if [ "$GPU_CHECK_FRESH_VENV" = 1 ]; then
            echo "the dry run's venv is not shaped like the GPU image" >&2
            return 1
        fi
    fi
    if [ -n "$GPU_CHECK_WHEEL_DIR" ]; then
        if ! ls "$GPU_CHECK_WHEEL_DIR"/*.whl > /dev/null; then
            echo "no wheels in $GPU_CHECK_WHEEL_DIR: run bash experiments/gpu_wheels.sh here first" >&2
            return 1
        fi
        "$GPU_CHECK_PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$GPU_CHECK_SITE" "$GPU_CHECK_WHEEL_DIR"/*.whl || return 1
    fi
    "$GPU_CHECK_PY" - << 'EOF' || return 1
import json, os, platform, sys
import hydra, omegaconf, polars, torch
import ctsim.app.bench

cuda = torch.cuda.is_available()
env = {"step": "env", "python": sys.executable, "python_version": platform.python_version(),
       "torch": torch.__version__, "polars": polars.__version__, "hydra": hydra.__version__,
       "omegaconf": omegaconf.__version__, "cuda": cuda,
       "device_name": torch.cuda.get_device_name() if cuda else platform.machine(),
       "bench_cases": list(ctsim.app.bench.CASES)}
print(env)
with open(os.path.join(os.environ["GPU_CHECK_RESULTS"], "env.json"), "w") as f:
    json.dump(env, f)
if os.environ["GPU_CHECK_DEVICE"] == "cuda" and not cuda:
    sys.exit("torch sees no CUDA device")
EOF
    "$GPU_CHECK_PY" -m pip list --disable-pip-version-check > "$GPU_CHECK_RESULTS/pip_list.txt" 2>&1 || true
}

dry() { [ "$GPU_CHECK_DRY" = 1 ]; }
bench() {
    "$GPU_CHECK_PY" -m ctsim.app.bench --device "$GPU_CHECK_DEVICE" --jsonl "$GPU_CHECK_OUT/bench.jsonl" "$@"
}
# the bench's ragged case, where this checkout's bench has one
ragged() { grep -q '"ragged"' "$GPU_CHECK_RESULTS/env.json" 2> /dev/null && echo ragged; }

run_numerics() {
    local sizes=()
    dry && sizes=(--kinds mlp --factors 1)
    # shellcheck disable=SC2206 # GPU_CHECK_NUMERICS: arguments, split into words
    [ -n "${GPU_CHECK_NUMERICS:-}" ] && sizes=($GPU_CHECK_NUMERICS)
    "$GPU_CHECK_PY" experiments/gpu_numerics.py --device "$GPU_CHECK_DEVICE" \
        --out "$GPU_CHECK_OUT/numerics.jsonl" "${sizes[@]}"
}
run_syncs() {
    local sizes=()
    dry && sizes=(--kinds mlp --models 4 --data equal)
    "$GPU_CHECK_PY" experiments/gpu_syncs.py --device "$GPU_CHECK_DEVICE" \
        --out "$GPU_CHECK_OUT/syncs.jsonl" "${sizes[@]}"
}
# 256 samples per model in batches of 64, 5 epochs: 20 optimizer steps in each timed train call (the
# sequential engine, timed first, takes 5,120 steps of them: about 29 s at the 5.6 ms a step it took on an
# H200 on 2026-12-04; 80 steps a call took it past the box). Warm-up is timed apart (warmup_s).
run_bench_256() {
    # the ragged case (where the bench has one): the trigger study's data sizes at 8, 64 and 256
    # YearbookNets, one epoch, so that it fits the step's box beside the equal-data case
    local sizes=(--models 256 --epochs 5 --ragged-epochs 1)
    dry && sizes=(--models 4 --samples 64 --epochs 2 --test 64 --ragged-models 2 --ragged-model mlp --ragged-epochs 1)
    bench --cases populations $(ragged) "${sizes[@]}" --out "$GPU_CHECK_RESULTS/bench_256"
}
run_bench_eval() {
    local sizes=()
    dry && sizes=(--eval-models 2 --eval-samples 256)
    bench --cases eval "${sizes[@]}" --out "$GPU_CHECK_RESULTS/bench_eval"
}
run_triggers() {
    local sizes=(device=cuda)
    dry && sizes=(device=cpu dataset.size=0.02 train.epochs=1 "population.seeds=[0]")
    "$GPU_CHECK_PY" -m ctsim experiment=portraits_triggers progress=false output.plots=false \
        output.checkpoints=none "${sizes[@]}" "hydra.run.dir=$GPU_CHECK_RESULTS/portraits_triggers"
}
run_bench_sizes() {
    local sizes=(--cases populations launch small_mlps --models 1 8 64 --epochs 20)
    dry && sizes=(--cases populations launch --models 1 2 --samples 64 --epochs 2 --test 64)
    bench "${sizes[@]}" --out "$GPU_CHECK_RESULTS/bench_sizes"
}
# One population size, full batches only: one graph to compile (warmup_s holds the compile time); 40
# steps per call, so that the sequential and uncompiled rows leave the compilation most of the box.
# A dry run takes the same path with the compiler off (TORCHDYNAMO_DISABLE): compiling even the launch
# case's tiny MLP costs about 30 s of CPU, a quarter of the CI time the dry run may take.
run_compile() {
    if ! "$GPU_CHECK_PY" -c "import sys; from ctsim.engine.stack import compile_bounded; sys.exit(not compile_bounded())"; then
        echo "compile: torch $("$GPU_CHECK_PY" -c 'import torch; print(torch.__version__)') has no bounded" \
            "compilation (torch.compile without recompile_limit and isolate_recompiles): not measured"
        return 3
    fi
    local sizes=(--cases populations --models 64 --epochs 10)
    dry && sizes=(--cases launch --models 2) && export TORCHDYNAMO_DISABLE=1
    bench --compile "${sizes[@]}" --out "$GPU_CHECK_RESULTS/compile"
}
run_profile() {
    local sizes=()
    dry && sizes=(--models 4 --samples 64 --epochs 1 --sequential-models 2 --repeats 1)
    # shellcheck disable=SC2086 # GPU_CHECK_PROFILE_PARTS: a list of words
    "$GPU_CHECK_PY" experiments/gpu_profile.py --device "$GPU_CHECK_DEVICE" "${sizes[@]}" \
        ${GPU_CHECK_PROFILE_PARTS:+--parts $GPU_CHECK_PROFILE_PARTS} \
        --out "$GPU_CHECK_OUT/profile.jsonl" --tables "$GPU_CHECK_RESULTS/profile"
}
# -o addopts=: without the project's -n auto, which needs pytest-xdist (the GPU image may not have it)
run_cuda_tests() {
    "$GPU_CHECK_PY" -m pytest -o addopts= -q -s -m gpu tests/test_engine_equivalence.py -p no:cacheprovider \
        ${GPU_CHECK_TESTS:+-k "$GPU_CHECK_TESTS"} --junitxml "$GPU_CHECK_RESULTS/cuda_tests.xml"
}
export -f dry bench ragged run_setup run_numerics run_syncs run_bench_256 run_bench_eval run_triggers \
    run_bench_sizes run_compile run_profile run_cuda_tests

record() { # step limit seconds cpu_seconds rc status
    printf '{"step": "%s", "limit_s": %s, "seconds": %s, "cpu_s": %s, "rc": %s, "status": "%s"}\n' "$@" \
        >> "$GPU_CHECK_OUT/steps.jsonl"
}
# CPU seconds (user + system) of the finished child processes so far: a step's own CPU time, which,
# unlike its wall time, a loaded machine does not inflate
# (into $cpu_now: in a command substitution, times would report the subshell's children)
child_cpu() {
    times > "$scratch/times"
    cpu_now=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
        print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$scratch/times")
}
save() { # the archive and the summary, as they stand now
    # A GPU machine returns files of 16 MiB at most: files over 1 MiB (a study's evaluations, checkpoints)
    # stay out of the archive, named in left_out.txt inside it.
    (cd "$GPU_CHECK_RESULTS" && find . -type f -size +1024k ! -name left_out.txt > left_out.txt &&
        find . -type f -size -1025k -print0 | tar -czf "$scratch.tgz" --null -T -) &&
        mv -f "$scratch.tgz" "$GPU_CHECK_OUT/results.tar.gz"
    "$GPU_CHECK_PY" experiments/gpu_summary.py "$GPU_CHECK_OUT" > "$GPU_CHECK_OUT/summary.md.part" &&
        mv -f "$GPU_CHECK_OUT/summary.md.part" "$GPU_CHECK_OUT/summary.md"
}

failed=0
for i in "${!steps[@]}"; do
    s=${steps[$i]}
    selected "$s" || continue
    reserve=0
    for later in "${steps[@]:$((i + 1))}"; do
        selected "$later" && reserve=$((reserve + box[$later]))
    done
    left=$((budget - ($(date +%s) - start)))
    limit=$((left - reserve))
    if [ -z "${stretch[$s]:-}" ] && [ "$limit" -gt "${box[$s]}" ]; then limit=${box[$s]}; fi
    least=15 # below this a step is not started, unless its own box is smaller
    if [ "${box[$s]}" -gt 0 ] && [ "${box[$s]}" -lt 15 ]; then least=${box[$s]}; fi
    if [ "$limit" -lt "$least" ]; then
        echo "== $s: skipped, ${limit} s would be left for it"
        record "$s" "$limit" 0 0 null skipped
        dry && failed=1
        continue
    fi
    echo "== $s: at most $limit s ($((budget - left)) s elapsed)"
    t0=$(date +%s.%N)
    child_cpu
    cpu0=$cpu_now
    timeout -k 10 "$limit" bash -c "run_$s" < /dev/null
    rc=$?
    seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    child_cpu
    cpu=$(awk -v a="$cpu0" -v b="$cpu_now" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0) status=ok ;;
        124 | 137) status=timed_out ;;
        3) status=unsupported ;; # the compile step on a torch without bounded compilation
        *) status=failed ;;
    esac
    [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && failed=1
    echo "== $s: $status (exit $rc) after $seconds s ($cpu s of CPU)"
    record "$s" "$limit" "$seconds" "$cpu" "$rc" "$status"
    save
done
echo "== gpu_check: done in $(($(date +%s) - start)) s; summary: $GPU_CHECK_OUT/summary.md"
if dry; then
    files=$(find "$GPU_CHECK_OUT" -type f | wc -l)
    echo "dry run: $files files in $GPU_CHECK_OUT (a GPU machine returns 8 at most)"
    if [ "$files" -gt 8 ]; then failed=1; fi
fi
exec > /dev/null 2>&1 # tee sees the end of its input: let it finish the log before the check returns
wait "$tee_pid"
exit "$failed"
