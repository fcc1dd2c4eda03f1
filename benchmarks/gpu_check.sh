#!/usr/bin/env bash
# GPU check: JAX's peak training memory next to estimate_vram (benchmarks/gpu_check.py).
#
# Made for a lent GPU machine with Python 3.12, JAX (CUDA) and NumPy, no TensorFlow and no
# network; Keras and whatever of its dependencies that machine lacks travel as wheels.
#
#   here:  bash benchmarks/gpu_check.sh --prepare .gpu_wheels    # download the cp312 wheels (~10 MiB)
#   there: bash benchmarks/gpu_check.sh "$OUT"                    # carry .gpu_wheels; JSON in $OUT
#   CPU:   bash benchmarks/gpu_check.sh /tmp/gpu_check --cpu-smoke
#
# Arguments after the output folder go to gpu_check.py (--cpu-smoke, --backbones, --steps,
# --deadline-s). Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default
# .gpu_wheels), WHEEL_PYTHON_VERSION (for --prepare, default 3.12), GPU_CHECK_TIMEOUT_S (the
# whole run is cut there, default 455 s: within 8 minutes; raise it for a slow CPU smoke run).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
KERAS_VERSION=3.15.1
# Keras 3's dependencies and theirs (rich: markdown-it-py, mdurl, pygments; optree: typing-extensions).
DEPS="absl-py rich markdown-it-py mdurl pygments namex h5py optree ml-dtypes packaging typing-extensions"

if [[ "${1:-}" == "--prepare" ]]; then
    dir=${2:?usage: gpu_check.sh --prepare DIR}
    pyver=${WHEEL_PYTHON_VERSION:-3.12}
    "$PY" -m pip download --quiet --only-binary=:all: --no-deps -d "$dir" \
        --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        "keras==$KERAS_VERSION" $DEPS
    ls -1 "$dir"
    du -sh "$dir"
    exit 0
fi

out=${1:?usage: gpu_check.sh OUT_DIR [gpu_check.py options] | --prepare DIR}
shift
mkdir -p "$out"
wheels=${GPU_CHECK_WHEELS:-$REPO/.gpu_wheels}
site=$(mktemp -d)/site

# Unpack Keras, and each dependency this Python cannot import yet, into a private folder put
# first on PYTHONPATH: nothing installed on the machine is changed, and no pip is needed.
if [[ -d "$wheels" ]]; then
    "$PY" - "$wheels" "$site" <<'EOF'
import importlib.util, sys, zipfile
from pathlib import Path

wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
module = {"absl_py": "absl", "markdown_it_py": "markdown_it"}
for wheel in sorted(wheels.glob("*.whl")):
    dist = wheel.name.split("-")[0].lower()
    if dist != "keras" and importlib.util.find_spec(module.get(dist, dist)) is not None:
        continue  # the machine has it: keep its version
    zipfile.ZipFile(wheel).extractall(site)
    print(f"unpacked {wheel.name}")
EOF
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheel folder $wheels: using the Keras this Python has" >&2
fi

export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
"$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout "${GPU_CHECK_TIMEOUT_S:-455}" "$PY" "$REPO/benchmarks/gpu_check.py" "$out" "$@"
