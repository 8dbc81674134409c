#!/usr/bin/env bash
# Runs the CUDA test of hubmoe's custom-op library on a GPU machine: the CUDA kernels against the CPU kernels
# (fp32 and fp16), then timings at Jamba sizes. Builds runtime/native/build/test_cuda unless a working one is there
# (it needs nvcc, not the ONNX Runtime headers). Exits non-zero on any mismatch.
#   test-ops-cuda.sh [--quick]        --quick: correctness on small shapes only
#   test-ops-cuda.sh --sparse         SparseLinear (every form against the CPU, then its decode timings) and NextToken only
#   test-ops-cuda.sh --input-major    the MoE input-major checks and timings only
#   HUBMOE_SANITIZE=1                 also run the quick checks under compute-sanitizer (memcheck)
# cuBLAS: libcublas.so.13 from the loader path, $HUBMOE_CUBLAS, or the first one found under /usr/local/cuda*,
# /usr/lib and Python's site-packages (nvidia/cu13/lib).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(cd "$here/.." && pwd)"
build="$native/build"
bin="$build/test_cuda"

cuda_home="${CUDA_HOME:-}"
if [[ -z "$cuda_home" ]]; then
  nvcc="$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)"
  cuda_home="$(cd "$(dirname "$nvcc")/.." 2>/dev/null && pwd || echo /usr/local/cuda)"
fi
export LD_LIBRARY_PATH="$cuda_home/lib64:$cuda_home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [[ -z "${HUBMOE_CUBLAS:-}" ]] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13' \
   && ! ls "$cuda_home"/lib64/libcublas.so.13 >/dev/null 2>&1; then
  found="$(find /usr/local /usr/lib /opt /usr/lib64 -name 'libcublas.so.13' 2>/dev/null | head -n1)"
  if [[ -n "$found" ]]; then
    export LD_LIBRARY_PATH="$(dirname "$found"):$LD_LIBRARY_PATH"
    echo "test-ops-cuda: cuBLAS from $found" >&2
  else
    echo "test-ops-cuda: libcublas.so.13 not found; the gemm path falls back to the skinny kernels" >&2
  fi
fi

if ! "$bin" --info >/dev/null 2>&1; then
  echo "test-ops-cuda: building $bin" >&2
  mkdir -p "$build"
  if command -v make >/dev/null 2>&1; then
    make -C "$native/ops" -j"$(nproc)" BUILD="$build" CUDA_HOME="$cuda_home" NVCC="$cuda_home/bin/nvcc" "$bin" >&2 || exit 1
  else
    (cd "$native/ops" && "$cuda_home/bin/nvcc" -std=c++17 -O3 -gencode arch=compute_90,code=sm_90 \
      -Xcompiler -fopenmp-simd -o "$bin" test/test_cuda.cu src/selective_scan_cuda.cu src/moe_cuda.cu \
      src/sparse_linear_cuda.cu src/cublas_loader.cc src/selective_scan_cpu.cc src/moe_cpu.cc \
      src/sparse_linear_cpu.cc src/next_token_cuda.cu src/next_token_cpu.cc -cudart shared -ldl) >&2 || exit 1
  fi
fi

"$bin" "$@"
rc=$?
if [[ "${HUBMOE_SANITIZE:-0}" == 1 ]]; then
  sanitizer="$(command -v compute-sanitizer || echo "$cuda_home/bin/compute-sanitizer")"
  echo "test-ops-cuda: compute-sanitizer --tool memcheck (quick checks)" >&2
  "$sanitizer" --tool memcheck --error-exitcode 9 "$bin" --quick | tail -n 3
  src=${PIPESTATUS[0]}
  [[ $src -ne 0 ]] && echo "test-ops-cuda: compute-sanitizer exit $src" >&2 && rc=$src
fi
exit $rc
