#!/usr/bin/env bash
# Runs the GPU tests (every test marked gpu, but the torch autograd ones on
# CUDA tensors) on a machine without a GPU: builds the module with GOLDEN_GPU_EMULATION (the CUDA/HIP
# sources compiled as C++, every GPU thread a fiber on the CPU: see
# csrc/emulation/gpu_emulation.h) and runs the tests against its backend
# "emulated", once with each block's threads resumed in order and once in
# reverse order (GOLDEN_GPU_EMULATION_SCHEDULE=reverse), so that a barrier
# missing between a write and a read of shared memory changes results in
# one of the two runs.
#   bash scripts/emulate-gpu.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
GOLDEN_SKIP_INSTALL=1 source scripts/setup-env.sh
python -m pip install --quiet --disable-pip-version-check pybind11 cmake ninja
build_dir=build/gpu-emulation
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGOLDEN_CUDA=OFF -DGOLDEN_GPU_EMULATION=ON \
  -DGOLDEN_WERROR=ON -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build_dir" -j "${GOLDEN_BUILD_JOBS:-2}"
package_root=$(mktemp -d)
trap 'rm -rf "$package_root"' EXIT
cp -r python/golden_kernels "$package_root/"
rm -f "$package_root"/golden_kernels/_C*.so
cp "$build_dir"/_C*.so "$package_root/golden_kernels/"
export PYTHONPATH="$package_root"
echo "== GPU tests on the emulated backend, threads resumed in order"
GOLDEN_GPU_EMULATION_SCHEDULE=forward python -m pytest -q -p no:cacheprovider -c setup.cfg tests -m gpu "$@"
# A missing barrier shows at any size: the reversed run leaves out the large ones.
echo "== GPU tests on the emulated backend, threads resumed in reverse order"
GOLDEN_GPU_EMULATION_SCHEDULE=reverse python -m pytest -q -p no:cacheprovider -c setup.cfg tests -m "gpu and not slow" "$@"
