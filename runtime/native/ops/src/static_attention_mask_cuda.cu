// CUDA StaticAttentionMask: one thread per bias element (grid-stride), the first S threads also write is_new and
// source; cache_position is read on the device, so the step needs no host synchronisation (CUDA-graph capturable).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "static_attention_mask.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__global__ void static_mask_kernel(StaticMaskArgs a) {
  const int64_t first = a.position[0], last = a.position[a.T - 1];
  const int64_t rows = a.groups * a.T, n = a.B * rows * a.S;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
    const int64_t s = e % a.S, br = e / a.S, b = br / rows, r = br % rows;
    a.bias[e] = a.mask[b * a.S + s] != 0 && s <= a.position[r % a.T] ? 0.f : kMaskedBias;
  }
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; s < a.S; s += stride) {
    if (a.is_new) a.is_new[s] = s >= first && s <= last;
    if (a.source) a.source[s] = min(max(s - first, int64_t(0)), max(last - first, int64_t(0)));
  }
}

}  // namespace

void static_mask(const StaticMaskArgs& a, void* stream) {
  if (a.S == 0) return;
  const int64_t n = std::max(a.B * a.groups * a.T * a.S, a.S);
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096));
  static_mask_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw OpError(std::string("StaticAttentionMask (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
