#!/usr/bin/env bash
# One-call check on a machine with an NVIDIA GPU, sized for a short lease:
# build with CUDA (sm_90 unless GOLDEN_CUDA_ARCH says otherwise), run every
# gpu-marked test (GPU == CPU bitwise, GPU invariance, device-side id checks),
# benchmark against PyTorch on the GPU, then compute-sanitizer memcheck and
# racecheck over a small-size subset. Each step has a time cap so a slow one
# cannot eat the steps after it. Logs go to GOLDEN_CHECK_LOGS (default
# build/gpu-check); a summary table is printed last; exits 1 if a step failed.
# GOLDEN_CHECK_STEPS picks the steps after the build (default: all of
# "tests bench memcheck racecheck"); GOLDEN_BENCH_ARGS goes to the benchmark.
set -uo pipefail

# gpu-check.sh --require-gpu-run COMMAND...: runs a pytest command and fails
# also when a test was skipped for lack of a GPU: on this machine such a skip
# would hide a broken setup. (A mode of this script so that `timeout` can run it.)
if [[ ${1:-} == --require-gpu-run ]]; then
  shift
  output=$("$@" 2>&1)
  status=$?
  echo "$output"
  [[ $status -eq 0 ]] && ! grep -q "no GPU" <<<"$output"
  exit
fi

script=$(realpath "$0")
cd "$(dirname "$0")/.."
export PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
arch=${GOLDEN_CUDA_ARCH:-90}
log_dir=${GOLDEN_CHECK_LOGS:-build/gpu-check}
mkdir -p "$log_dir"
rm -f "$log_dir"/*.log

# Every file holding gpu-marked tests, so that one module failing to import
# on the machine's torch cannot hide the others (--continue-on-collection-errors).
gpu_tests=(tests/test_gpu.py tests/test_gpu_ops.py tests/test_gpu_attention_decode.py tests/test_nonfinite.py tests/torch/test_gpu.py
           tests/ops/test_attention.py tests/ops/test_attention_saved_forward.py tests/ops/test_linear.py
           tests/ops/test_linear_logprob.py tests/ops/test_linear_logprob_backward.py
           tests/ops/test_linear_logprob_saved_entropy_partial.py tests/ops/test_linear_logprob_saved_logits.py
           tests/fuzz/test_fuzz_ops.py)
pytest_args=(-m gpu -p no:cacheprovider -q --continue-on-collection-errors -rfEs)
# The sanitizers are slow: every op at the two small sizes, plus the id checks
# and the attention forward's two kernel sets on masked caches.
sanitizer_run=(-m pytest tests/test_gpu_ops.py tests/test_gpu_attention_decode.py -q -p no:cacheprovider -k)
small_sizes="equals_reference and normal and (5x33x17 or 37x300x1000)"
masked_caches="forward_kernels_equal_reference and holes and float32"

names=() results=() seconds=()
failed=0

wanted=" ${GOLDEN_CHECK_STEPS:-tests bench memcheck racecheck} "

# step NAME SECONDS COMMAND...: runs the command, at most SECONDS, output in $log_dir/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS status
  [[ $name == env || $name == build || $wanted == *" $name "* ]] || return 0
  echo "==> $name: $*"
  timeout --kill-after=10 "$limit" "$@" >"$log_dir/$name.log" 2>&1
  status=$?
  if [[ $status -eq 0 ]]; then
    status=ok
  else
    [[ $status -eq 124 ]] && status="TIMED OUT after ${limit}s" || status="FAILED rc=$status"
    failed=1
    tail -n 25 "$log_dir/$name.log"
  fi
  names+=("$name") results+=("$status") seconds+=($((SECONDS - start)))
}

step env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv; \
  nvcc --version | tail -1; $python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'"
step build 240 env GOLDEN_BUILD_DIR=build/gpu-check-build GOLDEN_BUILD_JOBS="$(nproc)" PYTHON="$python" \
  scripts/dev-build.sh -DGOLDEN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGOLDEN_WERROR=ON \
  -DPython_EXECUTABLE="$(command -v "$python")"
if [[ ${results[-1]} == ok ]]; then
  step tests 200 "$script" --require-gpu-run "$python" -m pytest "${gpu_tests[@]}" "${pytest_args[@]}"
  step bench 150 "$python" benchmarks/bench_gpu.py --out "$log_dir/bench_gpu.md" ${GOLDEN_BENCH_ARGS:-}
  # No caching allocator: memcheck then sees each tensor's true bounds.
  step memcheck 150 "$script" --require-gpu-run env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
    --error-exitcode 1 --target-processes all "$python" "${sanitizer_run[@]}" "($small_sizes) or bad_id or ($masked_caches)"
  # racecheck is the slowest (an H200 took over 60 s for one attention case at
  # head_dim 256): the smallest size only, in fp32.
  step racecheck 150 "$script" --require-gpu-run compute-sanitizer --tool racecheck --racecheck-report all \
    --error-exitcode 1 --target-processes all "$python" "${sanitizer_run[@]}" \
    "(equals_reference and normal and 5x33x17 and float32) or ($masked_caches and 3x8/2x1/200x24)"
fi

echo
grep -h "passed\|failed" "$log_dir/tests.log" 2>/dev/null | tail -n 1
printf '%-10s %-8s %s\n' step seconds result
printf '%-10s %-8s %s\n' ---- ------- ------
for i in "${!names[@]}"; do
  printf '%-10s %-8s %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
done
exit "$failed"
