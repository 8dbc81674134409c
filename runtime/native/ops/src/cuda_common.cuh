// Device helpers shared by the CUDA kernels of the ai.hubmoe ops: T ↔ fp32 conversion, 16-byte vector loads
// of T converted to fp32, an alignment test, and programmatic dependent launches. Included by the .cu files only (all inline).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

// Programmatic dependent launch (sm_90): a kernel launched with launch_pdl may start while the kernel before it in
// the stream finishes (once every block of that one has called pdl_trigger or exited), which hides the launch and
// the previous kernel's drain. Such a kernel calls pdl_wait before it touches any global memory (it returns when the
// previous kernel has completed and its writes are visible), and calls pdl_trigger only after its own pdl_wait, so
// that what runs early never overlaps anything but index arithmetic. Without the launch attribute both are no-ops.
// HUBMOE_PDL=0 launches these kernels plainly (for comparison). Streams captured into CUDA graphs keep the edges.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

inline bool pdl_enabled() {
  static const bool on = [] {
    const char* s = std::getenv("HUBMOE_PDL");
    return !(s && s[0] == '0');
  }();
  return on;
}

template <typename... KArgs, typename... Args>
inline cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                              Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}

// V elements of T per load: one 16-byte vector when VEC, else one element.
template <typename T, bool VEC>
struct VecLoad {
  static constexpr int V = VEC ? 16 / static_cast<int>(sizeof(T)) : 1;
};

// The 16 bytes r as fp32: 8 fp16 or 4 fp32 elements.
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& r, float (&f)[VecLoad<T, true>::V]) {
  if constexpr (sizeof(T) == 2) {
    const __half2* h = reinterpret_cast<const __half2*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __half22float2(h[i]);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  } else {
    f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
  }
}

template <typename T, bool VEC>
__device__ __forceinline__ void load_vec(const T* ptr, float (&f)[VecLoad<T, VEC>::V]) {
  if constexpr (!VEC) {
    f[0] = to_f(__ldg(ptr));
  } else {
    unpack16<T>(__ldg(reinterpret_cast<const uint4*>(ptr)), f);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
