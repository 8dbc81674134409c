// CUDA SplitRMSNorm: one block per row. Each thread adds the squares of a strided walk over the whole row into its
// segment's sum (segments are consecutive), the block reduces the G ≤ 3 sums together, and each thread then writes
// its elements. A row is at most a few thousand elements (Jamba: dt_rank + 2·d_state), read twice from L1/L2.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda_common.cuh"
#include "split_rms_norm.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kThreads = 128;

struct Params {
  const void* x;
  const void* w[kSplitRmsMaxGroups];
  void* y[kSplitRmsMaxGroups];
  int len[kSplitRmsMaxGroups];
  int D, G;
  float eps;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) split_rms_norm_kernel(Params p) {
  __shared__ float part[kThreads / 32][kSplitRmsMaxGroups];
  __shared__ float inv[kSplitRmsMaxGroups];
  const T* x = static_cast<const T*>(p.x) + static_cast<size_t>(blockIdx.x) * p.D;
  const int end0 = p.len[0], end1 = end0 + p.len[1];
  float s[kSplitRmsMaxGroups] = {0.f, 0.f, 0.f};
  for (int i = threadIdx.x; i < p.D; i += kThreads) {
    const float v = to_f(x[i]);
    const int g = i < end0 ? 0 : i < end1 ? 1 : 2;
    s[g] += v * v;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int g = 0; g < kSplitRmsMaxGroups; ++g) {
    for (int o = 16; o > 0; o >>= 1) s[g] += __shfl_down_sync(0xffffffffu, s[g], o);
    if (lane == 0) part[warp][g] = s[g];
  }
  __syncthreads();
  if (threadIdx.x < p.G) {
    float t = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) t += part[w][threadIdx.x];
    inv[threadIdx.x] = rsqrtf(t / static_cast<float>(p.len[threadIdx.x]) + p.eps);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < p.D; i += kThreads) {
    const int g = i < end0 ? 0 : i < end1 ? 1 : 2;
    const int j = i - (g == 0 ? 0 : g == 1 ? end0 : end1);
    const T* w = static_cast<const T*>(p.w[g]);
    T* y = static_cast<T*>(p.y[g]) + static_cast<size_t>(blockIdx.x) * p.len[g];
    y[j] = from_f<T>(to_f(w[j]) * (to_f(x[i]) * inv[g]));
  }
}

}  // namespace

void split_rms_norm(const SplitRmsNormArgs& a, void* stream) {
  if (a.rows == 0) return;
  if (a.rows >= (int64_t(1) << 31) || a.D >= (int64_t(1) << 31))
    throw OpError("SplitRMSNorm (CUDA): sizes exceed 32-bit indexing");
  Params p{};
  p.x = a.x, p.D = static_cast<int>(a.D), p.G = a.G, p.eps = a.eps;
  for (int g = 0; g < a.G; ++g) p.w[g] = a.w[g], p.y[g] = a.y[g], p.len[g] = static_cast<int>(a.len[g]);
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(a.rows);
  if (a.dtype == DType::f16) split_rms_norm_kernel<__half><<<grid, kThreads, 0, s>>>(p);
  else split_rms_norm_kernel<float><<<grid, kThreads, 0, s>>>(p);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw OpError(std::string("SplitRMSNorm (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
