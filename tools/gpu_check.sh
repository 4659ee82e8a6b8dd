#!/usr/bin/env bash
# The GPU check: one command, run from the repository root on a CUDA
# machine with no network, in under 10 minutes on an H100. It installs the
# wheels in .whl/ (array-api-compat, array-api-strict; fetch them beforehand with
# tools/fetch_gpu_wheels.sh) into a private directory made by mktemp -d, then:
#   1. prints the device (nvidia-smi -L), driver and library versions;
#   2. runs the test suite on XDROP_BACKENDS (numpy,torch,torch-cuda,cupy,jax)
#      and `python -m xdrop verify --json` on the same backends;
#   3. runs the torch-CUDA tests with CuPy masked (an import finder that refuses
#      it), so torch CUDA tensors take the Triton kernels, and
#      tools/gpu_compile_check.py --no-cupy: the Triton path bit-identical to
#      the CPU, torch.compile(fullgraph=True) with 0 graph breaks and eager
#      bits, CUDA-graph capture of a training step with xdrop layers, and the
#      attention op on the device (mask bits vs keep_mask, values and
#      gradients vs the CPU, compiled fullgraph, and with a (B, 1, L, S)
#      additive float mask: its gradient too, as T5's position bias needs);
#   4. `python -m xdrop bench` on torch-cuda and cupy, 2^18..2^28 elements,
#      with the attention rows on CUDA (xdrop vs torch's fused SDPA, L = S in
#      ATTN_LENGTHS).
# Every command has its own timeout. Everything goes to stdout and to
# $OUT/gpu_check.log; JSON files: verify.json, compile_check.json, bench.json.
# Exits non-zero if the tests, verify or the compile check fail.
#
# Overrides (for trying it elsewhere, e.g. the CPU part on a laptop:
#   PYTHON=python XDROP_BACKENDS=numpy,torch OUT=/tmp/gc tools/gpu_check.sh):
# OUT (default ./gpu-out), PYTHON (python3), XDROP_BACKENDS, GPU_BENCH_BACKENDS
# (torch-cuda,cupy), BENCH_SIZES (18,20,22,24,26,28), ATTN_LENGTHS (128,512,1024,2048,4096), PYTEST_ARGS (tests),
# MASKED_ARGS (the torch-CUDA test files), PYTEST_WORKERS (8; 0 = no xdist), PYTEST_DIST (loadfile),
# COMPILE_BACKEND (inductor; aot_eager keeps eager's matmul rounding), and timeouts in seconds: PYTEST_TIMEOUT 180,
# MASKED_TIMEOUT 90, VERIFY_TIMEOUT 60, COMPILE_TIMEOUT 110, BENCH_TIMEOUT 120: at most 560 s
# in all, so the whole script fits the device tool's 600-second limit for one command.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-./gpu-out}"
PYTHON="${PYTHON:-python3}"
BACKENDS="${XDROP_BACKENDS:-numpy,torch,torch-cuda,cupy,jax}"
BENCH_BACKENDS="${GPU_BENCH_BACKENDS:-torch-cuda,cupy}"
BENCH_SIZES="${BENCH_SIZES:-18,20,22,24,26,28}"
WORKERS="${PYTEST_WORKERS:-8}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
# A private directory for the wheels: never a fixed, shared path first on PYTHONPATH.
SITE="$(mktemp -d "${TMPDIR:-/tmp}/xdrop-site.XXXXXX")" || exit 2
trap 'rm -rf "$SITE"' EXIT

# Many pytest workers share one GPU: JAX must not preallocate 75 % of its memory in each
# (on 2026-11-27 fifteen workers aborted that way), and CuPy/torch allocate on demand.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

section() { printf '\n===== %s =====\n' "$*"; }

# repeated --backend flags from a comma-separated list
backend_flags() {
    local IFS=,
    for name in $1; do printf -- '--backend\n%s\n' "$name"; done
}

verdict() { if (($1 == 0)); then echo PASS; elif (($1 == 124)); then echo "FAIL (timed out)"; else echo "FAIL (exit status $1)"; fi; }

main() {
    local pytest_rc=0 masked_rc=0 verify_rc=0 compile_rc=0 bench_rc=0

    section "host"
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    uname -a
    "$PYTHON" --version
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    else
        echo "nvidia-smi not found"
    fi
    git log -1 --format='commit %H %s' 2>/dev/null || true

    section "wheels from .whl/ into $SITE"
    shopt -s nullglob
    local wheels=(.whl/*.whl)
    shopt -u nullglob
    if ((${#wheels[@]})); then
        printf '%s\n' "${wheels[@]}"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "${wheels[@]}" ||
            echo "WARNING: installing the wheels failed; going on with what is installed"
    else
        echo "no wheels in .whl/ (run tools/fetch_gpu_wheels.sh where there is a network); using what is installed"
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    echo "PYTHONPATH=$PYTHONPATH"

    section "libraries"
    "$PYTHON" - <<'PY'
import importlib
for name in ("xdrop", "numpy", "array_api_compat", "array_api_strict", "torch", "triton", "cupy", "jax", "pytest",
             "xdist", "hypothesis"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:18} {getattr(mod, '__version__', '?'):12} {getattr(mod, '__file__', '')}")
    except Exception as exc:
        print(f"{name:18} unavailable: {type(exc).__name__}: {exc}")
try:
    import torch
    print("torch.cuda:", torch.cuda.is_available(), torch.version.cuda,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:
    print("torch.cuda: unavailable:", exc)
PY

    local xdist=()
    if ((WORKERS > 0)) && "$PYTHON" -c "import xdist" 2>/dev/null; then xdist=(-n "$WORKERS" --dist "${PYTEST_DIST:-loadfile}"); fi
    # shellcheck disable=SC2206  # PYTEST_ARGS is a list of words on purpose
    local targets=(${PYTEST_ARGS:-tests})
    # shellcheck disable=SC2206
    local masked_targets=(${MASKED_ARGS:-tests/test_dropout.py tests/test_kernels.py tests/test_variants.py tests/test_triton.py})

    section "pytest (XDROP_BACKENDS=$BACKENDS ${xdist[*]})"
    XDROP_BACKENDS="$BACKENDS" timeout "${PYTEST_TIMEOUT:-180}" \
        "$PYTHON" -m pytest -q -p no:cacheprovider -p no:benchmark --durations=10 "${xdist[@]}" "${targets[@]}"
    pytest_rc=$?
    echo "pytest: $(verdict $pytest_rc)"

    section "python -m xdrop verify --json (same backends)"
    local flags
    mapfile -t flags < <(backend_flags "$BACKENDS")
    timeout "${VERIFY_TIMEOUT:-60}" "$PYTHON" -m xdrop verify "${flags[@]}" --json "$OUT/verify.json"
    verify_rc=$?
    echo "verify: $(verdict $verify_rc)"

    section "torch-CUDA with CuPy masked: pytest (XDROP_BACKENDS=torch-cuda) and the compile/graph driver"
    # One process (no xdist: workers would not inherit the mask); the finder is the driver's.
    XDROP_BACKENDS=torch-cuda timeout "${MASKED_TIMEOUT:-90}" "$PYTHON" - "${masked_targets[@]}" <<'PY'
import sys
sys.path.insert(0, "tools")
from gpu_compile_check import _NoCupy
sys.meta_path.insert(0, _NoCupy())
import pytest
# the interpreter half of tests/test_triton.py ran in the matrix above; here the device kernels
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:benchmark", "-k", "not interpreter", *sys.argv[1:]]))
PY
    masked_rc=$?
    echo "pytest without CuPy: $(verdict $masked_rc)"
    timeout "${COMPILE_TIMEOUT:-110}" "$PYTHON" tools/gpu_compile_check.py --no-cupy --backend "${COMPILE_BACKEND:-inductor}" --json "$OUT/compile_check.json"
    compile_rc=$?
    echo "compile/graph check: $(verdict $compile_rc)"

    section "python -m xdrop bench (${BENCH_BACKENDS}, 2^{${BENCH_SIZES}}; attention on CUDA, L = S in ${ATTN_LENGTHS:-128,512,1024,2048,4096})"
    local bench_flags
    mapfile -t bench_flags < <(backend_flags "$BENCH_BACKENDS")
    timeout "${BENCH_TIMEOUT:-120}" "$PYTHON" -m xdrop bench "${bench_flags[@]}" --sizes "$BENCH_SIZES" \
        --attention-device cuda --attention-lengths "${ATTN_LENGTHS:-128,512,1024,2048,4096}" \
        --json "$OUT/bench.json" --plot "$OUT/bench.png"
    bench_rc=$?

    section "summary"
    echo "pytest:               $(verdict $pytest_rc)"
    echo "verify:               $(verdict $verify_rc)"
    echo "pytest without CuPy:  $(verdict $masked_rc)"
    echo "compile/graph check:  $(verdict $compile_rc)"
    echo "bench:                $(verdict $bench_rc)"
    echo "files:                $(ls "$OUT" | tr '\n' ' ')"
    ((pytest_rc == 0 && verify_rc == 0 && masked_rc == 0 && compile_rc == 0))
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
