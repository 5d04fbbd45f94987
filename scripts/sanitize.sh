#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer (the
# CPU backends, and on x86-64 the GPU sources run by the CPU emulation, see
# scripts/emulate-gpu.sh) and runs a fast subset of the tests that touches every
# op, every CPU path and every GPU kernel. Any report aborts the run. On a CPU without AVX-512 the
# avx512 kernels are built as AVX2 code with their 16-lane vectors
# (GOLDEN_EMULATE_AVX512), so their code runs here too; the default run's
# tests skip that path on such a CPU.
#   bash scripts/sanitize.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
GOLDEN_SKIP_INSTALL=1 source scripts/setup-env.sh
python -m pip install --quiet --disable-pip-version-check pybind11 cmake ninja
build_dir=build/sanitize
emulate_avx512=OFF
for flag in avx512f avx512bw avx512cd avx512dq avx512vl; do  # x86-64-v4's AVX-512 set
  grep -qw "$flag" /proc/cpuinfo || emulate_avx512=ON
done
emulate_gpu=OFF
[ "$(uname -m)" = x86_64 ] && emulate_gpu=ON  # the emulation's fiber switch is x86-64 code
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGOLDEN_CUDA=OFF \
  -DGOLDEN_SANITIZE=ON -DGOLDEN_WERROR=ON -DGOLDEN_EMULATE_AVX512="$emulate_avx512" \
  -DGOLDEN_GPU_EMULATION="$emulate_gpu" \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
echo "sanitizer build: AVX-512 kernels emulated on AVX2: $emulate_avx512; GPU sources emulated: $emulate_gpu"
cmake --build "$build_dir" -j "${GOLDEN_BUILD_JOBS:-2}"
package_root=$(mktemp -d)
cp -r python/golden_kernels "$package_root/"
rm -f "$package_root"/golden_kernels/_C*.so
cp "$build_dir"/_C*.so "$package_root/golden_kernels/"
# Python itself is not built with ASan: preload the runtime, ignore CPython's
# deliberate leaks, and stop at the first UBSan report.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$package_root"
# Slow tests are left to the plain run, and so are timing tests: ASan's
# slowdown changes what the scheduler does, which they assert.
python -m pytest -q -p no:cacheprovider -c setup.cfg tests -k "not slow" -m "not timing" "$@"
