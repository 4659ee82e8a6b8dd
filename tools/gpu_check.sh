#!/usr/bin/env bash
# The GPU check: one command, run from the repository root on a CUDA machine
# with no network. It installs the wheels in .whl/ (array-api-compat,
# array-api-strict; fetch them beforehand with tools/fetch_gpu_wheels.sh) into
# a private directory, then runs the test suite and `python -m xdrop verify` on
# the CPU and GPU backends, and the benchmark where `python -m xdrop bench`
# exists. Everything goes to stdout and to $OUT/gpu_check.log; verify writes
# $OUT/verify.json. Exits non-zero if the tests or verify fail.
#
# Overrides (for trying it elsewhere): OUT (default ./gpu-out), PYTHON
# (python3), XDROP_BACKENDS (numpy,torch,torch-cuda,cupy), SITE (/tmp/site),
# GPU_BENCH_BACKENDS (torch-cuda,cupy), PYTEST_TIMEOUT / VERIFY_TIMEOUT /
# BENCH_TIMEOUT in seconds (200 / 120 / 120).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-./gpu-out}"
PYTHON="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
BACKENDS="${XDROP_BACKENDS:-numpy,torch,torch-cuda,cupy}"
BENCH_BACKENDS="${GPU_BENCH_BACKENDS:-torch-cuda,cupy}"
mkdir -p "$OUT" || exit 2
LOG="$OUT/gpu_check.log"

section() { printf '\n===== %s =====\n' "$*"; }

# repeated --backend flags from a comma-separated list
backend_flags() {
    local IFS=,
    for name in $1; do printf -- '--backend\n%s\n' "$name"; done
}

main() {
    local pytest_rc=0 verify_rc=0 bench_status="not run"

    section "host"
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    uname -a
    "$PYTHON" --version
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi not found"; fi

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
    export PYTHONPATH="$SITE:$PWD"
    echo "PYTHONPATH=$PYTHONPATH"

    section "libraries"
    "$PYTHON" - <<'PY'
import importlib
for name in ("xdrop", "numpy", "array_api_compat", "array_api_strict", "torch", "cupy", "jax", "triton", "pytest", "hypothesis"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:18} {getattr(mod, '__version__', '?'):12} {getattr(mod, '__file__', '')}")
    except Exception as exc:
        print(f"{name:18} unavailable: {type(exc).__name__}: {exc}")
try:
    import torch
    print("torch.cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:
    print("torch.cuda: unavailable:", exc)
PY

    section "pytest (XDROP_BACKENDS=$BACKENDS)"
    XDROP_BACKENDS="$BACKENDS" timeout "${PYTEST_TIMEOUT:-200}" \
        "$PYTHON" -m pytest -q -p no:cacheprovider --durations=10 tests
    pytest_rc=$?
    echo "pytest exit status: $pytest_rc"

    section "python -m xdrop verify"
    local flags
    mapfile -t flags < <(backend_flags "$BACKENDS")
    timeout "${VERIFY_TIMEOUT:-120}" "$PYTHON" -m xdrop verify "${flags[@]}" --json "$OUT/verify.json"
    verify_rc=$?
    echo "verify exit status: $verify_rc"

    section "python -m xdrop bench"
    local help
    if help="$("$PYTHON" -m xdrop bench --help 2>&1)"; then
        local args=()
        if grep -q -- "--backend" <<<"$help"; then mapfile -t args < <(backend_flags "$BENCH_BACKENDS"); fi
        if grep -q -- "--json" <<<"$help"; then args+=(--json "$OUT/bench.json"); fi
        if grep -q -- "--plot" <<<"$help"; then args+=(--plot "$OUT/bench.png"); fi
        echo "python -m xdrop bench ${args[*]}"
        timeout "${BENCH_TIMEOUT:-120}" "$PYTHON" -m xdrop bench "${args[@]}"
        local bench_rc=$?
        bench_status="exit status $bench_rc"
    else
        bench_status="skipped: this xdrop has no bench subcommand"
        echo "$bench_status"
    fi

    section "summary"
    echo "pytest: $( ((pytest_rc == 0)) && echo PASS || echo "FAIL (exit status $pytest_rc)")"
    echo "verify: $( ((verify_rc == 0)) && echo PASS || echo "FAIL (exit status $verify_rc)")"
    echo "bench:  $bench_status"
    echo "files:  $(ls "$OUT" | tr '\n' ' ')"
    ((pytest_rc == 0 && verify_rc == 0))
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
