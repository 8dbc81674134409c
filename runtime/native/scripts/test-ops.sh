#!/usr/bin/env bash
# Builds and runs the CPU tests of hubmoe's custom-op library (no GPU needed); exits non-zero on any failure.
#   test_cpu  the CPU kernels against double-precision references (random inputs, every routing/activation variant)
#   test_ort  libhubmoe_ops.so loaded into ONNX Runtime (onnxruntime-node's libonnxruntime.so.1, or $HUBMOE_ORT_LIB):
#             registration, optional inputs, float/float16, type inference, error reporting
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(cd "$here/.." && pwd)"
repo="$(cd "$native/../.." && pwd)"
build="$native/build"

"$here/build-ops.sh" cpu "$build/test_cpu" "$build/test_ort"

echo "test-ops: kernels vs references" >&2
"$build/test_cpu"

ort_lib="${HUBMOE_ORT_LIB:-$repo/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1}"
if [[ ! -f "$ort_lib" ]]; then
  echo "test-ops: $ort_lib not found (run npm install, or set HUBMOE_ORT_LIB to a libonnxruntime.so.1)" >&2
  exit 1
fi
echo "test-ops: libhubmoe_ops.so inside ONNX Runtime ($ort_lib)" >&2
"$build/test_ort" "$ort_lib" "$build/libhubmoe_ops.so"
