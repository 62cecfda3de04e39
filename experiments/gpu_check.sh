#!/usr/bin/env bash
# The engine's GPU checks in one run of about 8 minutes on one H100 or H200:
#   experiments/gpu_check.sh [OUT_DIR]          (default results/gpu)
# 1. the measured GPU contract (experiments/gpu_numerics.py: batched vs sequential per model kind and
#    step count, and memory estimates against the allocator's peak);
# 2. the CUDA tests (pytest -m gpu), with the host-device synchronisations counted;
# 3. the engine benchmark: 1, 8, 64 and 256 YearbookNets, 1,000 models evaluated on portraits-size test
#    data, the launch-bound and small-MLP cases; then torch.compile at 64 and 256 models;
# 4. the full portraits_triggers study, in what time is left.
# Every step is time-boxed and logs to OUT_DIR; a step that fails does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
start=$(date +%s)
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s; $(( $(date +%s) - start )) s elapsed)"
    local t=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1 < /dev/null
    echo "   exit $? after $(( $(date +%s) - t )) s"
    tail -n "${TAIL:-12}" "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step numerics 90 python experiments/gpu_numerics.py --out "$out"
TAIL=30 step cuda_tests 100 python -m pytest -q -s -m gpu tests/test_engine_equivalence.py -p no:cacheprovider
step bench 150 python -m ctsim.bench --device cuda --cases populations eval launch small_mlps --out "$out"
step bench_compile 120 python -m ctsim.bench --device cuda --compile --cases populations --models 64 256 --out "$out/compile"
left=$(( 480 - ($(date +%s) - start) ))
if [ "$left" -gt 30 ]; then
    step triggers "$left" python -m ctsim experiment=portraits_triggers progress=false output.plots=false \
        output.checkpoints=none device=cuda "hydra.run.dir=$out/portraits_triggers"
fi
echo "== done in $(( $(date +%s) - start )) s"
