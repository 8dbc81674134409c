// CUDA MambaConv: one thread per output element (grid-stride over u/z, then over state_out). Each u element reads
// its K inputs (state or masked x) straight from memory — consecutive threads take consecutive channels, so the
// reads coalesce and the window's overlap between neighbouring positions stays in L1/L2.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda_common.cuh"
#include "mamba_conv.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ float seq_at(const MambaConvArgs& a, int64_t b, int64_t e, int64_t i) {
  // s[i]: the state for i < K−1, then mask · x rounded to T
  const int64_t K1 = a.K - 1;
  if (i < K1) return to_f(static_cast<const T*>(a.state)[(b * a.E + e) * K1 + i]);
  const int64_t row = b * a.T + (i - K1);
  const float m = to_f(static_cast<const T*>(a.mask)[row]);
  return to_f(from_f<T>(m * to_f(static_cast<const T*>(a.xz)[row * 2 * a.E + e])));
}

template <typename T>
__global__ void mamba_conv_kernel(MambaConvArgs a) {
  const int64_t n = a.B * a.T * a.E;
  const int64_t K1 = a.K - 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const T* w = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; o < n; o += stride) {
    const int64_t e = o % a.E, row = o / a.E, b = row / a.T, t = row % a.T;
    float acc = bias ? to_f(bias[e]) : 0.f;
    for (int64_t k = 0; k < a.K; ++k) acc += to_f(w[e * a.K + k]) * seq_at<T>(a, b, e, t + k);
    const float m = to_f(static_cast<const T*>(a.mask)[row]);
    static_cast<T*>(a.u)[o] = from_f<T>(m * (acc / (1.f + __expf(-acc))));
    static_cast<T*>(a.z)[o] = static_cast<const T*>(a.xz)[row * 2 * a.E + a.E + e];
  }
  const int64_t ns = a.B * a.E * K1;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; o < ns; o += stride) {
    const int64_t j = o % K1, be = o / K1, b = be / a.E, e = be % a.E;
    static_cast<T*>(a.state_out)[o] = from_f<T>(seq_at<T>(a, b, e, a.T + j));
  }
}

}  // namespace

void mamba_conv(const MambaConvArgs& a, void* stream) {
  const int64_t n = std::max(a.B * a.T * a.E, a.B * a.E * (a.K - 1));
  if (n == 0) return;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 8192));
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == DType::f16) mamba_conv_kernel<__half><<<grid, kThreads, 0, s>>>(a);
  else mamba_conv_kernel<float><<<grid, kThreads, 0, s>>>(a);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw OpError(std::string("MambaConv (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
