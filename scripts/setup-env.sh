#!/usr/bin/env bash
# Creates .venv (if missing) with the test dependencies and installs
# golden-kernels into it from this checkout. Sourced by run.sh and test.sh.
# Extra CMake definitions: GOLDEN_CMAKE_DEFINES="-C cmake.define.GOLDEN_WERROR=ON ...".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# torch 2.13.0 is the CPU build available locally; a bare "torch" would fetch a CUDA build.
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" numpy "pytest>=8" "hypothesis>=6" "transformers>=4.51" safetensors
# GOLDEN_SKIP_INSTALL=1 reuses the package already installed (CI builds it once).
if [ "${GOLDEN_SKIP_INSTALL:-0}" != 1 ]; then
  # shellcheck disable=SC2086
  python -m pip install --quiet --disable-pip-version-check ${GOLDEN_CMAKE_DEFINES:-} .
fi
