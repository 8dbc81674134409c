// CUDA SparseLinear (see sparse_linear.h and ../README.md). Two paths:
//  - sparse (few tokens): grid (column tiles, K chunks, token groups). A block of 4 warps prunes its K chunk for
//    up to 4 tokens into shared memory, compacts (in order, so results are deterministic) the rows that any of
//    them keeps, and each warp walks a quarter of that list, reading those weight rows as 16-byte vectors. The
//    warps' sums are reduced in shared memory and written as fp32 partial sums per K chunk; a second launch adds
//    the chunks and the bias and writes y. No host synchronisation, no atomics.
//  - dense (many tokens): a masking kernel writes the pruned x in T, cuBLAS GemmEx (fp32 compute) writes y, and a
//    bias kernel adds the bias (y rounded to T before and after, as MatMul then Add would).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>

#include "cublas_loader.h"
#include "cuda_common.cuh"
#include "sparse_linear.h"

namespace hubmoe {
namespace cuda {

namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw OpError(std::string("SparseLinear (CUDA): ") + what + ": " + cudaGetErrorString(e));
}

constexpr int kWarps = 4;           // warps per block
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxChunk = 512;      // K rows per block, at most (the chunk shrinks until the grid fills the GPU)
constexpr int kMinChunk = 64;
constexpr int kGroup = 4;           // tokens per block, at most
constexpr int kUnroll = 8;          // weight rows in flight per warp
constexpr int kSparseMaxTokens = 4; // automatic: sparse up to this many tokens

int grid_for(size_t n) { return static_cast<int>(std::max<size_t>(1, std::min<size_t>((n + 255) / 256, 132 * 8))); }

struct SparseParams {
  const void* x;
  const void* W;
  float* partial;  // [chunks, S, N]
  float mode, threshold;
  int S, K, N, chunk;
};

// G: tokens per block (1, 2 or 4; the grid's z covers S in groups of G).
template <typename T, bool VEC, int G>
__global__ void __launch_bounds__(kThreads) sparse_kernel(SparseParams p) {
  constexpr int V = VecLoad<T, VEC>::V;
  constexpr int TN = 32 * V;
  __shared__ float xs[G][kMaxChunk];
  __shared__ int idx[kMaxChunk];
  __shared__ int warp_count[kWarps];
  __shared__ float red[kWarps][G][TN];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k0 = blockIdx.y * p.chunk;
  const int s0 = blockIdx.z * G;
  const int ns = min(G, p.S - s0);
  const T* x = static_cast<const T*>(p.x);

  // 1. Prune this chunk for the group's tokens; compact, in order, the rows any token keeps.
  int base = 0;
  for (int r0 = 0; r0 < p.chunk; r0 += kThreads) {
    const int r = r0 + tid;
    const int k = k0 + r;
    bool any = false;
    if (r < p.chunk) {
#pragma unroll
      for (int s = 0; s < G; ++s) {
        float v = 0.f;
        if (s < ns && k < p.K) {
          const float d = to_f(x[static_cast<size_t>(s0 + s) * p.K + k]) - p.mode;
          if (fabsf(d) > p.threshold) v = to_f(from_f<T>(d));
        }
        xs[s][r] = v;
        any = any || v != 0.f;
      }
    }
    const unsigned mask = __ballot_sync(0xffffffffu, any);
    if (lane == 0) warp_count[warp] = __popc(mask);
    __syncthreads();
    int off = base;
    for (int w = 0; w < warp; ++w) off += warp_count[w];
    if (any) idx[off + __popc(mask & ((1u << lane) - 1u))] = r;
    int total = 0;
    for (int w = 0; w < kWarps; ++w) total += warp_count[w];
    base += total;
    __syncthreads();
  }
  const int kept = base;

  // 2. Each warp: every kWarps-th kept row, this tile's TN columns, kUnroll rows in flight.
  const int c0 = blockIdx.x * TN + lane * V;
  const bool col_ok = c0 < p.N;  // with VEC, N % V == 0, so the whole vector is in range
  float acc[G][V];
#pragma unroll
  for (int s = 0; s < G; ++s)
#pragma unroll
    for (int v = 0; v < V; ++v) acc[s][v] = 0.f;
  const T* W = static_cast<const T*>(p.W) + static_cast<size_t>(k0) * p.N + (col_ok ? c0 : 0);
  int i = warp;
  if (col_ok) {
    for (; i + (kUnroll - 1) * kWarps < kept; i += kUnroll * kWarps) {
      int r[kUnroll];
      float w[kUnroll][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) r[u] = idx[i + u * kWarps];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) load_vec<T, VEC>(W + static_cast<size_t>(r[u]) * p.N, w[u]);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int s = 0; s < G; ++s) {
          const float a = xs[s][r[u]];
#pragma unroll
          for (int v = 0; v < V; ++v) acc[s][v] = fmaf(a, w[u][v], acc[s][v]);
        }
    }
    for (; i < kept; i += kWarps) {
      const int r = idx[i];
      float w[V];
      load_vec<T, VEC>(W + static_cast<size_t>(r) * p.N, w);
#pragma unroll
      for (int s = 0; s < G; ++s) {
        const float a = xs[s][r];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[s][v] = fmaf(a, w[v], acc[s][v]);
      }
    }
  }

  // 3. Sum the warps; write this chunk's partial sums.
#pragma unroll
  for (int s = 0; s < G; ++s)
#pragma unroll
    for (int v = 0; v < V; ++v) red[warp][s][lane * V + v] = acc[s][v];
  __syncthreads();
  for (int o = tid; o < G * TN; o += kThreads) {
    const int s = o / TN, c = o % TN, col = blockIdx.x * TN + c;
    if (s >= ns || col >= p.N) continue;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += red[w][s][c];
    p.partial[(static_cast<size_t>(blockIdx.y) * p.S + s0 + s) * p.N + col] = sum;
  }
}

// y[s, n] = Σ_chunks partial[c, s, n] + bias[n]
template <typename T>
__global__ void finalize_kernel(const float* partial, const T* bias, T* y, int chunks, int S, int N) {
  const size_t total = static_cast<size_t>(S) * N;
  for (size_t o = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int c = 0; c < chunks; ++c) sum += partial[static_cast<size_t>(c) * total + o];
    if (bias) sum += to_f(bias[o % N]);
    y[o] = from_f<T>(sum);
  }
}

// xs = |x − mode| > threshold ? round_T(x − mode) : 0
template <typename T>
__global__ void mask_kernel(const T* x, T* xs, size_t n, float mode, float threshold) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float d = to_f(x[i]) - mode;
    xs[i] = fabsf(d) > threshold ? from_f<T>(d) : from_f<T>(0.f);
  }
}

template <typename T>
__global__ void bias_kernel(T* y, const T* bias, size_t total, int N) {
  for (size_t o = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[o] = from_f<T>(to_f(y[o]) + to_f(bias[o % N]));
}


int64_t sparse_max_tokens() {
  static const int64_t v = [] {
    const char* s = std::getenv("HUBMOE_SPARSE_MAX_S");
    return s ? std::max<int64_t>(0, std::atoll(s)) : int64_t(kSparseMaxTokens);
  }();
  return v;
}

// Rows per block: the largest power of two up to kMaxChunk that still gives about 8 blocks per SM (so that enough
// weight rows are in flight to saturate memory), but not below kMinChunk.
int chunk_for(int64_t K, int64_t tiles, int64_t groups) {
  int chunk = kMaxChunk;
  while (chunk > kMinChunk && tiles * groups * ((K + chunk - 1) / chunk) < 8 * 132) chunk /= 2;
  return chunk;
}

int64_t tile_cols(const SparseLinearArgs& a) {
  const int V = 16 / static_cast<int>(dtype_size(a.dtype));
  return a.N % V == 0 && aligned16(a.W) ? 32 * V : 32;
}

int64_t chunks_of(const SparseLinearArgs& a) {
  const int G = a.S <= 1 ? 1 : a.S <= 2 ? 2 : kGroup;
  const int64_t tiles = (a.N + tile_cols(a) - 1) / tile_cols(a);
  const int chunk = chunk_for(a.K, tiles, (a.S + G - 1) / G);
  return (a.K + chunk - 1) / chunk;
}

template <typename T, bool VEC, int G>
void launch_g(const SparseParams& p, dim3 grid, cudaStream_t s) {
  sparse_kernel<T, VEC, G><<<grid, kThreads, 0, s>>>(p);
}

template <typename T>
void launch_sparse(const SparseLinearArgs& a, float* partial, cudaStream_t s) {
  const int64_t TN = tile_cols(a);
  const bool vec = TN > 32;
  const int G = a.S <= 1 ? 1 : a.S <= 2 ? 2 : kGroup;
  const int64_t tiles = (a.N + TN - 1) / TN, groups = (a.S + G - 1) / G;
  const int chunk = chunk_for(a.K, tiles, groups);
  SparseParams p{a.x, a.W, partial, a.mode, a.threshold, static_cast<int>(a.S), static_cast<int>(a.K),
                 static_cast<int>(a.N), chunk};
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>((a.K + chunk - 1) / chunk),
                  static_cast<unsigned>(groups));
  if (vec) {
    if (G == 1) launch_g<T, true, 1>(p, grid, s);
    else if (G == 2) launch_g<T, true, 2>(p, grid, s);
    else launch_g<T, true, kGroup>(p, grid, s);
  } else {
    if (G == 1) launch_g<T, false, 1>(p, grid, s);
    else if (G == 2) launch_g<T, false, 2>(p, grid, s);
    else launch_g<T, false, kGroup>(p, grid, s);
  }
}

}  // namespace

const char* sparse_path_name(SparsePath p) {
  return p == SparsePath::sparse ? "sparse" : p == SparsePath::dense ? "dense" : "automatic";
}

struct SparseLinearRunner::Impl {
  std::mutex mu;
  Cublas::Handle handle = nullptr;
  int handle_device = -1;
  ~Impl() {
    const Cublas* cb = load_cublas(nullptr);
    if (handle && cb) cb->destroy(handle);
  }
};

SparseLinearRunner::SparseLinearRunner() : impl_(new Impl()) {}
SparseLinearRunner::~SparseLinearRunner() = default;

SparsePath SparseLinearRunner::resolve(const SparseLinearArgs& a, SparsePath requested) const {
  SparsePath p = requested;
  if (p == SparsePath::automatic) p = a.S <= sparse_max_tokens() ? SparsePath::sparse : SparsePath::dense;
  if (p == SparsePath::dense && !load_cublas(nullptr)) p = SparsePath::sparse;
  return p;
}

size_t SparseLinearRunner::workspace_bytes(const SparseLinearArgs& a, SparsePath path) const {
  if (path == SparsePath::dense) return static_cast<size_t>(a.S) * a.K * dtype_size(a.dtype);
  return static_cast<size_t>(chunks_of(a)) * a.S * a.N * 4;
}

void SparseLinearRunner::run(const SparseLinearArgs& a, void* ws, size_t ws_bytes, void* stream_ptr, SparsePath path) {
  if (a.S >= (int64_t(1) << 31) || a.K >= (int64_t(1) << 31) || a.N >= (int64_t(1) << 31) ||
      a.S * a.N >= (int64_t(1) << 40))
    throw OpError("SparseLinear (CUDA): sizes exceed 32-bit indexing");
  if (a.S == 0 || a.N == 0) return;
  path = resolve(a, path);
  if (ws_bytes < workspace_bytes(a, path)) throw OpError("SparseLinear (CUDA): workspace too small");
  auto s = static_cast<cudaStream_t>(stream_ptr);
  const bool f16 = a.dtype == DType::f16;
  const size_t total = static_cast<size_t>(a.S) * a.N;
  const int chunks = static_cast<int>(chunks_of(a));
  if (path == SparsePath::sparse || a.K == 0) {
    float* partial = static_cast<float*>(ws);
    if (chunks > 0) {
      if (f16)
        launch_sparse<__half>(a, partial, s);
      else
        launch_sparse<float>(a, partial, s);
    }
    if (f16)
      finalize_kernel<__half><<<grid_for(total), 256, 0, s>>>(partial, static_cast<const __half*>(a.bias),
                                                               static_cast<__half*>(a.y), chunks, a.S, a.N);
    else
      finalize_kernel<float><<<grid_for(total), 256, 0, s>>>(partial, static_cast<const float*>(a.bias),
                                                              static_cast<float*>(a.y), chunks, a.S, a.N);
    cuda_check(cudaGetLastError(), "kernel launch");
    return;
  }
  std::string why;
  const Cublas* cb = load_cublas(&why);
  if (!cb) throw OpError("SparseLinear (CUDA): " + why);
  const size_t nx = static_cast<size_t>(a.S) * a.K;
  if (f16)
    mask_kernel<__half><<<grid_for(nx), 256, 0, s>>>(static_cast<const __half*>(a.x), static_cast<__half*>(ws), nx,
                                                      a.mode, a.threshold);
  else
    mask_kernel<float><<<grid_for(nx), 256, 0, s>>>(static_cast<const float*>(a.x), static_cast<float*>(ws), nx,
                                                     a.mode, a.threshold);
  cuda_check(cudaGetLastError(), "mask kernel launch");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    int device = 0;
    cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    if (!impl_->handle || impl_->handle_device != device) {
      if (impl_->handle) cb->destroy(impl_->handle);
      impl_->handle = nullptr;
      if (const int st = cb->create(&impl_->handle))
        throw OpError("SparseLinear (CUDA): cublasCreate failed with status " + std::to_string(st));
      impl_->handle_device = device;
    }
    if (const int st = cb->set_stream(impl_->handle, s))
      throw OpError("SparseLinear (CUDA): cublasSetStream failed with status " + std::to_string(st));
    // Row-major y[S, N] = xs[S, K] · W[K, N] is column-major yᵀ = Wᵀ·xsᵀ with W read as column-major [N, K].
    const cudaDataType t = f16 ? CUDA_R_16F : CUDA_R_32F;
    const float one = 1.f, zero = 0.f;
    if (const int st = cb->gemm_ex(impl_->handle, kCublasOpN, kCublasOpN, static_cast<int>(a.N), static_cast<int>(a.S),
                                   static_cast<int>(a.K), &one, a.W, t, static_cast<int>(a.N), ws, t,
                                   static_cast<int>(a.K), &zero, a.y, t, static_cast<int>(a.N), kCublasCompute32F,
                                   kCublasGemmDefault))
      throw OpError(std::string("SparseLinear (CUDA): cublasGemmEx failed: ") +
                    (cb->status_string ? cb->status_string(st) : std::to_string(st)));
  }
  if (a.bias) {
    if (f16)
      bias_kernel<__half><<<grid_for(total), 256, 0, s>>>(static_cast<__half*>(a.y), static_cast<const __half*>(a.bias),
                                                           total, static_cast<int>(a.N));
    else
      bias_kernel<float><<<grid_for(total), 256, 0, s>>>(static_cast<float*>(a.y), static_cast<const float*>(a.bias),
                                                          total, static_cast<int>(a.N));
  }
  cuda_check(cudaGetLastError(), "kernel launch");
}

}  // namespace cuda
}  // namespace hubmoe
