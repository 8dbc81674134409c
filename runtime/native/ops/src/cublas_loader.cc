#include "cublas_loader.h"

#include "common.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace hubmoe {
namespace cuda {

namespace {

struct Loaded {
  Cublas api;
  bool ok = false;
  std::string why;
};

Loaded load() {
  Loaded l;
  std::vector<std::string> names;
  if (const char* p = std::getenv("HUBMOE_CUBLAS")) names.push_back(p);
  names.push_back("libcublas.so.13");
  names.push_back("libcublas.so.12");
  void* h = nullptr;
  std::string errors;
  for (const auto& n : names) {
    h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) {
      l.api.library = n;
      break;
    }
    const char* e = dlerror();
    errors += "\n  " + n + ": " + (e ? e : "not found");
  }
  if (!h) {
    l.why = "cannot load cuBLAS (put CUDA 13's libcublas.so.13 on LD_LIBRARY_PATH, or set HUBMOE_CUBLAS):" + errors;
    return l;
  }
  auto sym = [&](const char* name) { return dlsym(h, name); };
  l.api.create = reinterpret_cast<decltype(l.api.create)>(sym("cublasCreate_v2"));
  l.api.destroy = reinterpret_cast<decltype(l.api.destroy)>(sym("cublasDestroy_v2"));
  l.api.set_stream = reinterpret_cast<decltype(l.api.set_stream)>(sym("cublasSetStream_v2"));
  l.api.gemm_ex = reinterpret_cast<decltype(l.api.gemm_ex)>(sym("cublasGemmEx"));
  l.api.status_string = reinterpret_cast<decltype(l.api.status_string)>(sym("cublasGetStatusString"));
  if (!l.api.create || !l.api.destroy || !l.api.set_stream || !l.api.gemm_ex) {
    l.why = l.api.library + " lacks cublasCreate_v2/cublasDestroy_v2/cublasSetStream_v2/cublasGemmEx";
    return l;
  }
  l.ok = true;
  return l;
}

}  // namespace

const Cublas* load_cublas(std::string* why) {
  static Loaded l = load();
  if (!l.ok && why) *why = l.why;
  return l.ok ? &l.api : nullptr;
}

CublasHandle::~CublasHandle() {
  if (handle_ && cb_) cb_->destroy(handle_);
}

Cublas::Handle CublasHandle::bind(const Cublas& cb, cudaStream_t stream, const char* op) {
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess)
    throw OpError(std::string(op) + " (CUDA): cudaGetDevice: " + cudaGetErrorString(e));
  if (!handle_ || device_ != device) {
    if (handle_) cb.destroy(handle_);
    handle_ = nullptr;
    if (const int st = cb.create(&handle_))
      throw OpError(std::string(op) + " (CUDA): cublasCreate failed with status " + std::to_string(st));
    cb_ = &cb;
    device_ = device;
  }
  if (const int st = cb.set_stream(handle_, stream))
    throw OpError(std::string(op) + " (CUDA): cublasSetStream failed with status " + std::to_string(st));
  return handle_;
}

void gemm_check(const Cublas& cb, int status, const char* op, const char* what) {
  if (status)
    throw OpError(std::string(op) + " (CUDA): cublasGemmEx (" + what + ") failed: " +
                  (cb.status_string ? cb.status_string(status) : std::to_string(status)));
}

}  // namespace cuda
}  // namespace hubmoe
