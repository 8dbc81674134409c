// CUDA NextToken: one block of 1024 threads per row. Each thread keeps the best (value, index) of a strided walk,
// then the block reduces with "greater value, or equal value and lower index", so the result is the CPU kernel's
// (the lowest index of the maximum) whatever the walk order.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda_common.cuh"
#include "next_token.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kNone = 0x7fffffff;  // no candidate yet

__device__ __forceinline__ void better(float& v, int& i, float v2, int i2) {
  if (i2 != kNone && (i == kNone || v2 > v || (v2 == v && i2 < i))) v = v2, i = i2;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) next_token_kernel(const T* logits, int64_t* next, int T_, int V, int vocab) {
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const T* row = logits + (static_cast<size_t>(blockIdx.x) * T_ + T_ - 1) * V;
  float v = 0.f;
  int i = kNone;
  for (int j = threadIdx.x; j < vocab; j += kThreads) {
    const float x = to_f(row[j]);
    if (x > -INFINITY && (i == kNone || x > v)) v = x, i = j;  // NaN fails both comparisons
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_down_sync(0xffffffffu, v, o);
    const int i2 = __shfl_down_sync(0xffffffffu, i, o);
    better(v, i, v2, i2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = v, si[warp] = i;
  __syncthreads();
  if (warp == 0) {
    v = sv[lane], i = si[lane];
    for (int o = 16; o > 0; o >>= 1) {
      const float v2 = __shfl_down_sync(0xffffffffu, v, o);
      const int i2 = __shfl_down_sync(0xffffffffu, i, o);
      better(v, i, v2, i2);
    }
    if (lane == 0) next[blockIdx.x] = i == kNone ? 0 : i;
  }
}

}  // namespace

void next_token(const NextTokenArgs& a, void* stream) {
  if (a.B == 0) return;
  if (a.B >= (int64_t(1) << 31) || a.T >= (int64_t(1) << 31) || a.V >= (int64_t(1) << 31))
    throw OpError("NextToken (CUDA): sizes exceed 32-bit indexing");
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(a.B);
  if (a.dtype == DType::f16)
    next_token_kernel<__half><<<grid, kThreads, 0, s>>>(static_cast<const __half*>(a.logits), a.next,
                                                       static_cast<int>(a.T), static_cast<int>(a.V),
                                                       static_cast<int>(a.vocab));
  else
    next_token_kernel<float><<<grid, kThreads, 0, s>>>(static_cast<const float*>(a.logits), a.next,
                                                      static_cast<int>(a.T), static_cast<int>(a.V),
                                                      static_cast<int>(a.vocab));
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw OpError(std::string("NextToken (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
