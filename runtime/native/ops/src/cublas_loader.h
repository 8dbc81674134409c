// cuBLAS, loaded at run time with dlopen: the library needs no cuBLAS headers or import library to build, and in an
// ORT process it shares the libcublas.so.13 that the CUDA execution provider has already loaded. Only the few
// entry points hubmoe uses are declared; their C ABI is stable since CUDA 11.
#pragma once

#include <cuda_runtime_api.h>
#include <library_types.h>

#include <string>

namespace hubmoe {
namespace cuda {

enum : int { kCublasOpN = 0, kCublasOpT = 1, kCublasCompute32F = 68, kCublasGemmDefault = -1 };

struct Cublas {
  using Handle = struct cublasContext*;
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*gemm_ex)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
                 cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                 cudaDataType Ctype, int ldc, int compute_type, int algo) = nullptr;
  const char* (*status_string)(int) = nullptr;  // may be null
  std::string library;                            // what was loaded
};

// The loaded library, or null (why says why). Tries $HUBMOE_CUBLAS, libcublas.so.13, libcublas.so.12.
const Cublas* load_cublas(std::string* why);

// One runner's cuBLAS handle (a runner belongs to one ORT kernel instance): created on first use for the current
// device, again after a device change, and bound to the caller's stream by every `bind`. Not locked: callers hold
// their runner's mutex from `bind` to their last cuBLAS call, so that no other thread rebinds the handle meanwhile.
class CublasHandle {
 public:
  CublasHandle() = default;
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  // The handle for the current device, bound to `stream`; errors are OpErrors that start with `op`.
  Cublas::Handle bind(const Cublas& cb, cudaStream_t stream, const char* op);

 private:
  const Cublas* cb_ = nullptr;
  Cublas::Handle handle_ = nullptr;
  int device_ = -1;
};

// Throws an OpError "<op> (CUDA): cublasGemmEx (<what>) failed: <status>" unless status is 0.
void gemm_check(const Cublas& cb, int status, const char* op, const char* what);

}  // namespace cuda
}  // namespace hubmoe
