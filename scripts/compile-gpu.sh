#!/usr/bin/env bash
# Compiles every GPU source (csrc/cuda/*.cu) as CUDA with nvcc for sm_80 and
# sm_90 and as HIP with hipcc for gfx90a, into a temporary directory, with the
# contract's flags read from CMakeLists.txt. Fails on any error or warning.
# Needs no GPU. Usage: scripts/compile-gpu.sh [cuda|hip|all]  (default: all)
# GOLDEN_GPU_SOURCES="csrc/cuda/a.cu ..." compiles only those files.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
sources=(${GOLDEN_GPU_SOURCES:-csrc/cuda/*.cu})
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

# The value list of `set(NAME ...)` in CMakeLists.txt, so the flags stay defined once.
cmake_list() {
  local flags
  flags=$(sed -n "s/^set($1 \(.*\))$/\1/p" CMakeLists.txt)
  [[ -n $flags ]] || { echo "compile-gpu.sh: $1 not found in CMakeLists.txt" >&2; exit 1; }
  echo "$flags"
}
read -r -a warning_flags <<<"$(cmake_list GOLDEN_WARNING_FLAGS)"
read -r -a cxx_fp_flags <<<"$(cmake_list GOLDEN_CXX_FP_FLAGS)"
read -r -a cuda_fp_flags <<<"$(cmake_list GOLDEN_CUDA_FP_FLAGS)"
read -r -a hip_fp_flags <<<"$(cmake_list GOLDEN_HIP_FP_FLAGS)"

# Runs a compile; any diagnostic output at all counts as a failure.
compile() {
  local log="$out_dir/log"
  if ! "$@" >"$log" 2>&1 || [[ -s $log ]]; then
    echo "FAILED: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

compile_cuda() {
  local nvcc=${NVCC:-nvcc}
  # The host compiler sees nvcc's generated code, whose GNU line markers
  # -Wpedantic rejects: every other warning flag applies.
  local host_flags
  host_flags=$(echo "${warning_flags[*]/-Wpedantic/} ${cxx_fp_flags[*]}" | xargs | tr ' ' ,)
  for src in "${sources[@]}"; do
    compile "$nvcc" -std=c++17 -O3 "${cuda_fp_flags[@]}" -Werror all-warnings \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -Xcompiler "$host_flags" -c "$src" -o "$out_dir/$(basename "$src").cuda.o"
    echo "nvcc  sm_80,sm_90  $src"
  done
}

compile_hip() {
  local hipcc=${HIPCC:-hipcc}
  export HIP_PLATFORM=amd  # Debian's hipcc picks nvcc when one is installed
  for src in "${sources[@]}"; do
    compile "$hipcc" -x hip --offload-arch=gfx90a -std=c++17 -O3 \
      "${hip_fp_flags[@]}" "${warning_flags[@]}" -Werror -c "$src" -o "$out_dir/$(basename "$src").hip.o"
    echo "hipcc gfx90a       $src"
  done
}

case $which in
  cuda) compile_cuda ;;
  hip) compile_hip ;;
  all) compile_cuda; compile_hip ;;
  *) echo "usage: $0 [cuda|hip|all]" >&2; exit 2 ;;
esac
echo "compile-gpu.sh: all GPU sources compiled cleanly ($which)"
