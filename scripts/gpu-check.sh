#!/usr/bin/env bash
# One-call check on a machine with an NVIDIA GPU: build with CUDA (sm_90 only
# unless GOLDEN_CUDA_ARCH says otherwise), run the GPU tests and the whole
# suite, compute-sanitizer memcheck and racecheck over the GPU tests, and the
# rms_norm benchmark (CPU only: no benchmark drives the GPU yet). Prints a
# summary table; exits 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH}
arch=${GOLDEN_CUDA_ARCH:-90}
log_dir=${GOLDEN_CHECK_LOGS:-build/gpu-check}
mkdir -p "$log_dir"
rm -f "$log_dir"/*.log
# The sanitizers are slow: they skip the 8192-row shapes (the same kernels at smaller sizes).
sanitizer_tests=(tests/test_gpu.py -q -p no:cacheprovider -k "not 8192x4096 and not stream_and_repeat")

names=() results=() seconds=()
failed=0

# step NAME COMMAND...: runs the command with its output in $log_dir/NAME.log.
step() {
  local name=$1
  shift
  local start=$SECONDS status
  echo "==> $name: $*"
  if "$@" >"$log_dir/$name.log" 2>&1; then
    status=ok
  else
    status="FAILED (see $log_dir/$name.log)"
    failed=1
    tail -n 30 "$log_dir/$name.log"
  fi
  names+=("$name") results+=("$status") seconds+=($((SECONDS - start)))
}

skip() {
  names+=("$1") results+=("skipped: $2") seconds+=(0)
}

# Runs a pytest command line and fails also when a test was skipped for
# lack of a GPU: on this machine such a skip would hide a broken setup.
require_gpu_run() {
  local output status
  output=$("$@" -rs 2>&1)
  status=$?
  echo "$output"
  [[ $status -eq 0 ]] && ! grep -q "no GPU" <<<"$output"
}

step gpu-info nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step build env GOLDEN_BUILD_DIR=build/gpu-check-build scripts/dev-build.sh \
  -DGOLDEN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGOLDEN_WERROR=ON
if [[ ${results[-1]} != ok ]]; then
  skip tests "build failed"
else
  step backends python -c "import golden_kernels as gk; b = gk.available_backends(); print(b); assert 'cuda' in b, b"
  step test-gpu require_gpu_run python -m pytest tests/test_gpu.py -p no:cacheprovider
  step test-gpu-marked require_gpu_run python -m pytest tests -m gpu -p no:cacheprovider
  step test-all python -m pytest tests -p no:cacheprovider
  # No caching allocator: memcheck then sees each tensor's true bounds.
  step memcheck require_gpu_run env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
    --error-exitcode 1 --target-processes all python -m pytest "${sanitizer_tests[@]}"
  step racecheck require_gpu_run compute-sanitizer --tool racecheck --racecheck-report all \
    --error-exitcode 1 --target-processes all python -m pytest "${sanitizer_tests[@]}"
  step bench-rms-norm python benchmarks/bench_rms_norm.py
fi

echo
printf '%-16s %-8s %s\n' step seconds result
printf '%-16s %-8s %s\n' ---- ------- ------
for i in "${!names[@]}"; do
  printf '%-16s %-8s %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
done
if [[ -f "$log_dir/bench-rms-norm.log" ]]; then
  echo
  tail -n 25 "$log_dir/bench-rms-norm.log"
fi
exit "$failed"
