// Loading ONNX Runtime at run time, the process OrtEnv, and CUDA device→host copies.
#include <dlfcn.h>

#include <mutex>
#include <stdexcept>

#include "hubmoe.h"

namespace hubmoe {

namespace {
std::mutex g_mutex;
void* g_handle = nullptr;
const OrtApiBase* g_base = nullptr;
std::string g_path;
Ort::Env* g_env = nullptr;  // leaked on purpose: outlives every session, whatever the teardown order
}  // namespace

void LoadOrt(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_handle) {
    if (path != g_path) {
      // Loading a second copy of ONNX Runtime into one process would split its env and allocators.
      throw std::runtime_error("ONNX Runtime is already loaded from " + g_path + "; cannot load " + path +
                               " as well (one copy per process)");
    }
    return;
  }
  // RTLD_LOCAL: ORT exports only its C entry point; if onnxruntime-node's binding already mapped this
  // file, dlopen returns that same copy.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    throw std::runtime_error("could not load ONNX Runtime from " + path + ": " + (e ? e : "unknown dlopen error"));
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetApiBaseFn>(dlsym(h, "OrtGetApiBase"));
  if (!get_base) {
    dlclose(h);
    throw std::runtime_error(path + " does not export OrtGetApiBase; is it ONNX Runtime's libonnxruntime.so?");
  }
  const OrtApiBase* base = get_base();
  const OrtApi* api = base ? base->GetApi(ORT_API_VERSION) : nullptr;
  if (!api) {
    std::string have = base && base->GetVersionString ? base->GetVersionString() : "unknown";
    dlclose(h);
    throw std::runtime_error("ONNX Runtime " + have + " at " + path + " does not offer API version " +
                             std::to_string(ORT_API_VERSION) + " (it is older than the headers the addon was built with)");
  }
  Ort::InitApi(api);
  g_handle = h;
  g_base = base;
  g_path = path;
}

bool OrtLoaded() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_handle != nullptr;
}

const std::string& OrtLibraryPath() { return g_path; }

std::string OrtVersionString() { return g_base ? g_base->GetVersionString() : ""; }

void EnsureOrt(Napi::Env env) {
  if (!OrtLoaded()) {
    throw MakeError(env, "NOT_INITIALIZED", "hubmoe native addon: init(path to libonnxruntime.so.1) must be called first");
  }
}

Ort::Env& ProcessEnv() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_env) g_env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "hubmoe");
  return *g_env;
}

namespace {
using CudaSetDeviceFn = int (*)(int);
using CudaMemcpyFn = int (*)(void*, const void*, size_t, int);
using CudaGetErrorStringFn = const char* (*)(int);
using CudaMemcpy2DFn = int (*)(void*, size_t, const void*, size_t, size_t, size_t, int);
using CudaMemsetFn = int (*)(void*, int, size_t);
struct CudaRuntime {
  CudaSetDeviceFn set_device = nullptr;
  CudaMemcpyFn memcpy = nullptr;
  CudaMemcpy2DFn memcpy2d = nullptr;
  CudaMemsetFn memset = nullptr;
  CudaGetErrorStringFn error_string = nullptr;
};

const CudaRuntime* FindCudaRuntime() {
  static std::once_flag once;
  static CudaRuntime rt;
  static bool ok = false;
  std::call_once(once, [] {
    // Prefer the copy the CUDA execution provider already loaded (RTLD_NOLOAD), then any on the path.
    const char* names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
    void* h = nullptr;
    for (int pass = 0; pass < 2 && !h; ++pass) {
      for (const char* n : names) {
        h = dlopen(n, RTLD_NOW | RTLD_LOCAL | (pass == 0 ? RTLD_NOLOAD : 0));
        if (h) break;
      }
    }
    if (!h) return;
    rt.set_device = reinterpret_cast<CudaSetDeviceFn>(dlsym(h, "cudaSetDevice"));
    rt.memcpy = reinterpret_cast<CudaMemcpyFn>(dlsym(h, "cudaMemcpy"));
    rt.error_string = reinterpret_cast<CudaGetErrorStringFn>(dlsym(h, "cudaGetErrorString"));
    rt.memcpy2d = reinterpret_cast<CudaMemcpy2DFn>(dlsym(h, "cudaMemcpy2D"));
    rt.memset = reinterpret_cast<CudaMemsetFn>(dlsym(h, "cudaMemset"));
    ok = rt.set_device && rt.memcpy && rt.memcpy2d && rt.memset;
  });
  return ok ? &rt : nullptr;
}
const CudaRuntime& Runtime(const char* what) {
  const CudaRuntime* rt = FindCudaRuntime();
  if (!rt) throw std::runtime_error(std::string("no CUDA runtime (libcudart.so.13/.12) could be loaded to ") + what);
  return *rt;
}

void Check(const CudaRuntime& rt, int err, const char* what) {
  if (err == 0) return;
  std::string why = rt.error_string ? rt.error_string(err) : ("error " + std::to_string(err));
  throw std::runtime_error(std::string(what) + " failed: " + why);
}
}  // namespace

void CopyHostToCuda2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, int device_id) {
  if (width == 0 || rows == 0) return;
  const CudaRuntime& rt = Runtime("write into a CUDA value");
  Check(rt, rt.set_device(device_id), "cudaSetDevice");
  Check(rt, rt.memcpy2d(dst, dpitch, src, spitch, width, rows, 4 /* cudaMemcpyDefault */), "writing into a CUDA value");
}

void CopyCudaToHost2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, int device_id) {
  if (width == 0 || rows == 0) return;
  const CudaRuntime& rt = Runtime("read a CUDA value");
  Check(rt, rt.set_device(device_id), "cudaSetDevice");
  Check(rt, rt.memcpy2d(dst, dpitch, src, spitch, width, rows, 4 /* cudaMemcpyDefault */), "reading a CUDA value");
}

void ZeroCuda(void* dst, size_t bytes, int device_id) {
  if (bytes == 0) return;
  const CudaRuntime& rt = Runtime("clear a CUDA value");
  Check(rt, rt.set_device(device_id), "cudaSetDevice");
  Check(rt, rt.memset(dst, 0, bytes), "clearing a CUDA value");
}

void CopyCudaToHost(void* dst, const void* src, size_t bytes, int device_id) {
  if (bytes == 0) return;
  const CudaRuntime* rt = FindCudaRuntime();
  if (!rt) throw std::runtime_error("no CUDA runtime (libcudart.so.13/.12) could be loaded to copy the value to the host");
  int err = rt->set_device(device_id);
  if (err == 0) err = rt->memcpy(dst, src, bytes, 4 /* cudaMemcpyDefault */);
  if (err != 0) {
    std::string what = rt->error_string ? rt->error_string(err) : ("error " + std::to_string(err));
    throw std::runtime_error("copying a CUDA value to the host failed: " + what);
  }
}

}  // namespace hubmoe
