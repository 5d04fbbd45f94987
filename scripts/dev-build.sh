#!/usr/bin/env bash
# Builds the extension in place for development: build/dev, then the module is
# copied next to the Python sources so `PYTHONPATH=python pytest` uses it.
# Extra arguments go to CMake, e.g. -DGOLDEN_CUDA=OFF or -DGOLDEN_WERROR=ON;
# PYTHON names the interpreter whose pybind11 is used (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${GOLDEN_BUILD_DIR:-build/dev}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$("${PYTHON:-python}" -m pybind11 --cmakedir)" "$@" >/dev/null
cmake --build "$build_dir" -j "${GOLDEN_BUILD_JOBS:-2}"
cp "$build_dir"/_C*.so python/golden_kernels/
