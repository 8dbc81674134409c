// CUDA SkipRMSNorm: one block per row, launched as a programmatic dependent launch (cuda_common.cuh); at one decode
// token each norm sits between the last kernel of a block and the first of the next, and a plain launch there would
// break the chain of the other decode kernels.
//
// Thread t is lane t of the sum of squares (skip_rms_norm.h): it takes the row's 16-byte groups t, t + 256, …, adds
// each group's squares in order and its groups' sums in order, and the block adds the lanes as the header's tree.
// Every add and multiply is rounded on its own (__fadd_rn, __fmul_rn: no fused multiply-add), so the bytes are the
// CPU kernel's.
//  - cached (up to kMaxItems groups per thread: D ≤ 16384 in fp16, 8192 in fp32): before pdl_wait a thread loads its
//    weight groups into registers (no kernel writes the weight); after it x and skip; s stays in registers from the
//    sum of squares to the write of y.
//  - streamed (longer rows): the row is read twice; the second pass recomputes s from x and skip.
// A group is one 16-byte load where D is a multiple of the group and every pointer is 16-byte aligned, otherwise
// element loads (the last group padded with zeros) into the same registers.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda_common.cuh"
#include "skip_rms_norm.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kLanes = kSkipRmsLanes;  // threads of a block with more than kLanes groups
constexpr int kMaxItems = 8;           // groups a thread keeps in registers

struct Params {
  const void* x;
  const void* skip;  // or null
  const void* w;
  void* y;
  void* sum;  // or null
  int D, groups;
  float eps;
};

template <typename T>
struct Group {
  static constexpr int V = 16 / static_cast<int>(sizeof(T));  // elements of a group
};

template <typename T>
__device__ __forceinline__ uint4 pack(const float (&f)[Group<T>::V]) {
  uint4 r;
  if constexpr (sizeof(T) == 2) {
    __half2* h = reinterpret_cast<__half2*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
  } else {
    r = make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  }
  return r;
}

// Group g of a row of D elements. LDG: through the read-only cache (the weight).
template <typename T, bool VEC, bool LDG = false>
__device__ __forceinline__ uint4 load_group(const T* row, int g, int D) {
  constexpr int V = Group<T>::V;
  if constexpr (VEC) {
    const uint4* p = reinterpret_cast<const uint4*>(row) + g;
    if constexpr (LDG) return __ldg(p);
    else return *p;
  } else {
    float f[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int i = g * V + j;
      f[j] = i < D ? to_f(LDG ? __ldg(row + i) : row[i]) : 0.f;
    }
    return pack<T>(f);
  }
}

template <typename T, bool VEC>
__device__ __forceinline__ void store_group(T* row, int g, int D, const uint4& r) {
  constexpr int V = Group<T>::V;
  if constexpr (VEC) {
    reinterpret_cast<uint4*>(row)[g] = r;
  } else {
    float f[V];
    unpack16<T>(r, f);
#pragma unroll
    for (int j = 0; j < V; ++j)
      if (g * V + j < D) row[g * V + j] = from_f<T>(f[j]);
  }
}

// s = round_T(x + skip), element by element.
template <typename T>
__device__ __forceinline__ uint4 add_group(const uint4& x, const uint4& skip) {
  float a[Group<T>::V], b[Group<T>::V];
  unpack16<T>(x, a);
  unpack16<T>(skip, b);
#pragma unroll
  for (int j = 0; j < Group<T>::V; ++j) a[j] = __fadd_rn(a[j], b[j]);
  return pack<T>(a);
}

// The group's squares added in order.
template <typename T>
__device__ __forceinline__ float squares(const uint4& s) {
  float f[Group<T>::V];
  unpack16<T>(s, f);
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < Group<T>::V; ++j) q = __fadd_rn(q, __fmul_rn(f[j], f[j]));
  return q;
}

template <typename T>
__device__ __forceinline__ float round_t(float v) {
  return to_f(from_f<T>(v));
}

// y = round_T(w · round_T(s · inv)), element by element.
template <typename T>
__device__ __forceinline__ uint4 norm_group(const uint4& s, const uint4& w, float inv) {
  float a[Group<T>::V], g[Group<T>::V];
  unpack16<T>(s, a);
  unpack16<T>(w, g);
#pragma unroll
  for (int j = 0; j < Group<T>::V; ++j) a[j] = __fmul_rn(g[j], round_t<T>(__fmul_rn(a[j], inv)));
  return pack<T>(a);
}

// 1 / sqrt(Σ s² / D + eps) from the lanes' sums r (one per thread), added as skip_rms_norm.h's tree: lanes past the
// block's threads are 0. Every thread gets it.
__device__ __forceinline__ float inv_rms(float r, const Params& p) {
  __shared__ float lanes[kLanes];
  __shared__ float total;
  lanes[threadIdx.x] = r;
  __syncthreads();
  if (threadIdx.x < 32) {
    const int l = threadIdx.x;
    float v[kLanes / 32];  // lanes l, l + 32, …, l + 224
#pragma unroll
    for (int w = 0; w < kLanes / 32; ++w) v[w] = l + 32 * w < static_cast<int>(blockDim.x) ? lanes[l + 32 * w] : 0.f;
#pragma unroll
    for (int h = kLanes / 64; h >= 1; h /= 2)  // lane strides 128, 64, 32
#pragma unroll
      for (int w = 0; w < h; ++w) v[w] = __fadd_rn(v[w], v[w + h]);
    float c = v[0];
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) c = __fadd_rn(c, __shfl_down_sync(0xffffffffu, c, o));  // strides 16 … 1
    if (l == 0) total = __frcp_rn(__fsqrt_rn(__fadd_rn(__fdiv_rn(c, static_cast<float>(p.D)), p.eps)));
  }
  __syncthreads();
  return total;
}

template <typename T, bool VEC, int ITEMS>
__global__ void __launch_bounds__(kLanes) cached_kernel(Params p) {
  const size_t off = static_cast<size_t>(blockIdx.x) * static_cast<size_t>(p.D);
  const int t = threadIdx.x;
  uint4 w[ITEMS], xs[ITEMS], ks[ITEMS];
  // The weight is no kernel's output: its loads are in flight while the previous kernel finishes.
#pragma unroll
  for (int k = 0; k < ITEMS; ++k)
    if (t + k * kLanes < p.groups) w[k] = load_group<T, VEC, true>(static_cast<const T*>(p.w), t + k * kLanes, p.D);
  pdl_wait();
  pdl_trigger();
  const T* x = static_cast<const T*>(p.x) + off;
  const T* skip = p.skip ? static_cast<const T*>(p.skip) + off : nullptr;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k)
    if (t + k * kLanes < p.groups) {
      xs[k] = load_group<T, VEC>(x, t + k * kLanes, p.D);
      if (skip) ks[k] = load_group<T, VEC>(skip, t + k * kLanes, p.D);
    }
  float r = 0.f;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k)
    if (t + k * kLanes < p.groups) {
      if (skip) {
        xs[k] = add_group<T>(xs[k], ks[k]);
        if (p.sum) store_group<T, VEC>(static_cast<T*>(p.sum) + off, t + k * kLanes, p.D, xs[k]);
      }
      r = __fadd_rn(r, squares<T>(xs[k]));
    }
  const float inv = inv_rms(r, p);
  T* y = static_cast<T*>(p.y) + off;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k)
    if (t + k * kLanes < p.groups) store_group<T, VEC>(y, t + k * kLanes, p.D, norm_group<T>(xs[k], w[k], inv));
}

template <typename T, bool VEC>
__device__ __forceinline__ uint4 sum_group(const T* x, const T* skip, int g, int D) {
  const uint4 a = load_group<T, VEC>(x, g, D);
  return skip ? add_group<T>(a, load_group<T, VEC>(skip, g, D)) : a;
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(kLanes) streamed_kernel(Params p) {
  const size_t off = static_cast<size_t>(blockIdx.x) * static_cast<size_t>(p.D);
  pdl_wait();
  pdl_trigger();
  const T* x = static_cast<const T*>(p.x) + off;
  const T* skip = p.skip ? static_cast<const T*>(p.skip) + off : nullptr;
  float r = 0.f;
  for (int g = threadIdx.x; g < p.groups; g += kLanes) {
    const uint4 s = sum_group<T, VEC>(x, skip, g, p.D);
    if (p.sum) store_group<T, VEC>(static_cast<T*>(p.sum) + off, g, p.D, s);
    r = __fadd_rn(r, squares<T>(s));
  }
  const float inv = inv_rms(r, p);
  T* y = static_cast<T*>(p.y) + off;
  for (int g = threadIdx.x; g < p.groups; g += kLanes) {
    const uint4 w = load_group<T, VEC, true>(static_cast<const T*>(p.w), g, p.D);
    store_group<T, VEC>(y, g, p.D, norm_group<T>(sum_group<T, VEC>(x, skip, g, p.D), w, inv));
  }
}

template <typename T, bool VEC>
cudaError_t launch(const Params& p, int rows, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(rows));
  if (p.groups <= kLanes) {  // a thread per group, in whole warps
    const dim3 block(static_cast<unsigned>((p.groups + 31) / 32 * 32));
    return launch_pdl(cached_kernel<T, VEC, 1>, grid, block, 0, s, p);
  }
  const dim3 block(kLanes);
  const int items = (p.groups + kLanes - 1) / kLanes;
  if (items <= 2) return launch_pdl(cached_kernel<T, VEC, 2>, grid, block, 0, s, p);
  if (items <= 4) return launch_pdl(cached_kernel<T, VEC, 4>, grid, block, 0, s, p);
  if (items <= kMaxItems) return launch_pdl(cached_kernel<T, VEC, kMaxItems>, grid, block, 0, s, p);
  return launch_pdl(streamed_kernel<T, VEC>, grid, block, 0, s, p);
}

template <typename T>
cudaError_t launch(const SkipRmsNormArgs& a, cudaStream_t s) {
  constexpr int V = Group<T>::V;
  Params p{a.x, a.skip, a.w, a.y, a.sum, static_cast<int>(a.D), static_cast<int>((a.D + V - 1) / V), a.eps};
  const bool vec = a.D % V == 0 && aligned16(a.x) && aligned16(a.skip) && aligned16(a.w) && aligned16(a.y) &&
                   aligned16(a.sum);
  const int rows = static_cast<int>(a.rows);
  return vec ? launch<T, true>(p, rows, s) : launch<T, false>(p, rows, s);
}

}  // namespace

void skip_rms_norm(const SkipRmsNormArgs& a, void* stream) {
  if (a.rows == 0 || a.D == 0) return;
  if (a.rows >= (int64_t(1) << 31) || a.D >= (int64_t(1) << 31))
    throw OpError("SkipRMSNorm (CUDA): sizes exceed 32-bit indexing");
  const auto s = static_cast<cudaStream_t>(stream);
  const cudaError_t e = a.dtype == DType::f16 ? launch<__half>(a, s) : launch<float>(a, s);
  if (e != cudaSuccess) throw OpError(std::string("SkipRMSNorm (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
