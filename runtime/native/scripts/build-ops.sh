#!/usr/bin/env bash
# Builds hubmoe's custom-op libraries into runtime/native/build/:
#   libhubmoe_ops.so       CPU kernels (always)
#   libhubmoe_ops_cuda.so  CPU + CUDA kernels (when nvcc is found: $NVCC, $CUDA_HOME/bin/nvcc, /usr/local/cuda, PATH;
#                          HUBMOE_NO_CUDA=1 skips it)
# The ONNX Runtime headers are fetched first (fetch-ort-headers.sh). Extra arguments go to make, e.g.
#   build-ops.sh cpu            only the CPU library
#   build-ops.sh build/test_cpu …
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(cd "$here/.." && pwd)"
ops="$native/ops"
build="$native/build"

for tool in make g++; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build-ops: '$tool' not found" >&2; exit 1; }
done

include="$("$here/fetch-ort-headers.sh")"
jobs="$(nproc 2>/dev/null || echo 2)"
mk=(make -C "$ops" -j"$jobs" BUILD="$build" ORT_INCLUDE="$include")

# nvcc: $NVCC, else $CUDA_HOME/bin/nvcc, else /usr/local/cuda/bin/nvcc, else the one on PATH.
nvcc="${NVCC:-}"
if [[ "${HUBMOE_NO_CUDA:-0}" == 1 ]]; then
  nvcc=""
elif [[ -z "$nvcc" ]]; then
  for c in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc "$(command -v nvcc 2>/dev/null || true)"; do
    if [[ -n "$c" && -x "$c" ]]; then nvcc="$c"; break; fi
  done
fi
if [[ -n "$nvcc" ]]; then
  cuda_home="$(cd "$(dirname "$nvcc")/.." && pwd)"
  mk+=(NVCC="$nvcc" CUDA_HOME="$cuda_home")
fi

if [[ $# -gt 0 ]]; then
  "${mk[@]}" "$@"
  exit 0
fi

"${mk[@]}" cpu
echo "build-ops: built $build/libhubmoe_ops.so" >&2
if [[ -n "$nvcc" ]]; then
  "${mk[@]}" cuda
  echo "build-ops: built $build/libhubmoe_ops_cuda.so (nvcc: $nvcc)" >&2
elif [[ "${HUBMOE_NO_CUDA:-0}" == 1 ]]; then
  echo "build-ops: HUBMOE_NO_CUDA=1: libhubmoe_ops_cuda.so NOT built; CPU library only" >&2
else
  echo "build-ops: nvcc not found (set NVCC or CUDA_HOME): libhubmoe_ops_cuda.so NOT built; CPU library only" >&2
fi
