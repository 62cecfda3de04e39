#!/usr/bin/env bash
# The packages ctsim imports that the GPU machine's image lacks (polars, hydra-core and what they need
# beyond the image), as wheels for that image's Python (CPython 3.12, x86-64 Linux), downloaded here into
# a git-ignored folder that experiments/gpu_check.sh carries and installs offline:
#   bash experiments/gpu_wheels.sh [DIR]          (default .gpu_wheels; needs PyPI, takes seconds)
# The versions are this environment's, so the GPU runs what the tests here ran. A package that PyPI has
# only as source (antlr4-python3-runtime) is built into a wheel here; it must be pure Python.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.gpu_wheels}"
py="${PYTHON:-python3}"

# name==version of each package to carry: the closure of polars and hydra-core's requirements (markers
# read for Python 3.12 on Linux), less what the image already holds (/work/.library/device/KINDS.md).
mapfile -t wanted < <("$py" - <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement

ON_IMAGE = {"packaging", "pyyaml", "numpy", "typing-extensions", "importlib-resources", "dataclasses"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "extra": ""}
todo, seen = ["polars", "hydra-core"], {}
while todo:
    name = todo.pop().lower().replace("_", "-")
    if name in seen or name in ON_IMAGE:
        continue
    try:
        seen[name] = version(name)
    except PackageNotFoundError:
        sys.exit(f"gpu_wheels: {name} is not installed here; install ctsim first (pip install -e .)")
    for text in requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(ENV):
            todo.append(req.name)
for name, v in sorted(seen.items()):
    print(f"{name}=={v}")
EOF
)
echo "carrying: ${wanted[*]}"
rm -rf "$dir"
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
for spec in "${wanted[@]}"; do
    if ! "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$dir" "$spec" 2> /dev/null; then
        echo "no wheel of $spec on PyPI for the image: building one from its source"
        "$py" -m pip wheel -q --no-deps -w "$dir" "$spec"
    fi
done
for whl in "$dir"/*.whl; do
    case "$whl" in
        *-none-any.whl | *-abi3-manylinux*x86_64*.whl | *-cp312-cp312-manylinux*x86_64*.whl) ;;
        *) echo "gpu_wheels: $whl does not fit CPython 3.12 on x86-64 Linux" >&2; exit 1 ;;
    esac
done
wheels=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
if ! git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    echo "$(ls "$dir" | wc -l) wheels, $((wheels / 1048576)) MiB (not a git checkout: what a device run" \
        "carries is not summed)"
    exit 0
fi
# What travels with a device run: tracked and untracked-not-ignored files, plus this folder (64 MiB in all).
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2> /dev/null |
    awk '{ s += $1 } END { print s + 0 }')
echo "$(ls "$dir" | wc -l) wheels, $((wheels / 1048576)) MiB;" \
    "with the working tree $(((tree + wheels) / 1048576)) MiB of the 64 MiB a device run carries"
if [ $((tree + wheels)) -gt $((64 * 1048576)) ]; then
    echo "gpu_wheels: the working tree and $dir exceed the 64 MiB a device run carries" >&2
    exit 1
fi
