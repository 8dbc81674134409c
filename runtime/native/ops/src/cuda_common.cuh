// Device helpers shared by the CUDA kernels of the ai.hubmoe ops: T ↔ fp32 conversion, 16-byte vector loads
// of T converted to fp32, and an alignment test. Included by the .cu files only (all inline).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

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

template <typename T, bool VEC>
__device__ __forceinline__ void load_vec(const T* ptr, float (&f)[VecLoad<T, VEC>::V]) {
  if constexpr (!VEC) {
    f[0] = to_f(__ldg(ptr));
  } else if constexpr (sizeof(T) == 2) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(ptr));
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __half22float2(h[i]);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  } else {
    const float4 u = __ldg(reinterpret_cast<const float4*>(ptr));
    f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w;
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
