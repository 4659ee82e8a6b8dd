#!/usr/bin/env bash
# Run where there is a network: download into .whl/ the wheels that
# tools/gpu_check.sh installs on a CUDA machine without one (CPython 3.12,
# x86-64 Linux). Pass package specs to fetch others instead of the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
if (($#)); then packages=("$@"); else packages=(array-api-compat array-api-strict); fi
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform any \
    -d .whl "${packages[@]}"
ls -l .whl
