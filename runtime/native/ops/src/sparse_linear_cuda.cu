// CUDA SparseLinear (see sparse_linear.h and ../README.md). Two paths:
//  - sparse (few tokens): grid (column tiles, K chunks, token groups). A block prunes its K chunk for up to 4
//    tokens into shared memory, compacts (in order, so results are deterministic) the rows that any of them keeps,
//    and its warps walk that list, reading those weight rows as 16-byte vectors; their sums meet in shared memory.
//    One token (decode): the K chunks of a column tile are one thread-block cluster, which adds the chunks through
//    distributed shared memory and writes y with the bias (one launch). Otherwise, or without clusters: fp32
//    partial sums per K chunk, and a second launch adds the chunks and the bias. No host synchronisation, no atomics.
//  - dense (many tokens): a masking kernel writes the pruned x in T, cuBLAS GemmEx (fp32 compute) writes y, and a
//    bias kernel adds the bias (y rounded to T before and after, as MatMul then Add would).
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
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

constexpr int kWarps = 4;           // warps per block of the split form
constexpr int kMaxChunk = 512;      // K rows staged in shared memory at a time
constexpr int kMinChunk = 64;
constexpr int kGroup = 4;           // tokens per block, at most
constexpr int kUnroll = 8;          // weight rows in flight per warp
constexpr int kSparseMaxTokens = 4; // automatic: sparse up to this many tokens
constexpr int kMaxCluster = 16;     // blocks per cluster, at most (16 is a non-portable size, allowed on sm_90)

int grid_for(size_t n) { return static_cast<int>(std::max<size_t>(1, std::min<size_t>((n + 255) / 256, 132 * 8))); }

struct SparseParams {
  const void* x;
  const void* W;
  float* partial;    // split form: [chunks, S, N]
  const void* bias;  // cluster form: [N] or null
  void* y;           // cluster form: [1, N]
  float mode, threshold;
  int S, K, N, chunk;
};

// The body both forms share, for one block: its K rows [k0, k0 + rows) (staged kMaxChunk at a time), its column
// tile (blockIdx.x) and its group of up to G tokens from s0. Prunes each piece for the group's tokens into xs,
// compacts, in order (deterministic), the rows any token keeps into idx, and has each of the NW warps walk every
// NW-th kept row, kUnroll rows in flight, adding into acc (this lane's V columns for each token).
template <typename T, bool VEC, int G, int NW>
__device__ __forceinline__ void sparse_rows(const SparseParams& p, int k0, int rows, int s0, int ns,
                                            float (&xs)[G][kMaxChunk], int (&idx)[kMaxChunk], int (&warp_count)[NW],
                                            float (&acc)[G][VecLoad<T, VEC>::V]) {
  constexpr int V = VecLoad<T, VEC>::V;
  constexpr int TN = 32 * V;
  constexpr int NT = 32 * NW;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T* x = static_cast<const T*>(p.x);
  const int c0 = blockIdx.x * TN + lane * V;
  const bool col_ok = c0 < p.N;  // with VEC, N % V == 0, so the whole vector is in range
  for (int sub = 0; sub < rows; sub += kMaxChunk) {
    const int len = min(kMaxChunk, rows - sub);
    const int kb = k0 + sub;
    if (sub) __syncthreads();  // every warp has walked the previous piece
    // 1. Prune this piece for the group's tokens; compact, in order, the rows any token keeps.
    int base = 0;
    for (int r0 = 0; r0 < len; r0 += NT) {
      const int r = r0 + tid;
      bool any = false;
      if (r < len) {
#pragma unroll
        for (int s = 0; s < G; ++s) {
          float v = 0.f;
          if (s < ns) {
            const float d = to_f(x[static_cast<size_t>(s0 + s) * p.K + kb + r]) - p.mode;
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
      for (int w = 0; w < NW; ++w) total += warp_count[w];
      base += total;
      __syncthreads();
    }
    const int kept = base;

    // 2. Each warp: every NW-th kept row, this tile's TN columns, kUnroll rows in flight.
    const T* W = static_cast<const T*>(p.W) + static_cast<size_t>(kb) * p.N + (col_ok ? c0 : 0);
    int i = warp;
    if (col_ok) {
      for (; i + (kUnroll - 1) * NW < kept; i += kUnroll * NW) {
        int r[kUnroll];
        float w[kUnroll][V];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) r[u] = idx[i + u * NW];
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
      for (; i < kept; i += NW) {
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
  }
}

// Split form: one K chunk (y), column tile (x) and group of up to G tokens (z) per block of kWarps warps, which
// writes fp32 partial sums [chunks, S, N]; finalize_kernel adds the chunks and the bias.
template <typename T, bool VEC, int G>
__global__ void __launch_bounds__(32 * kWarps) split_kernel(SparseParams p) {
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
  float acc[G][V];
#pragma unroll
  for (int s = 0; s < G; ++s)
#pragma unroll
    for (int v = 0; v < V; ++v) acc[s][v] = 0.f;
  sparse_rows<T, VEC, G, kWarps>(p, k0, max(0, min(p.chunk, p.K - k0)), s0, ns, xs, idx, warp_count, acc);
  // Sum the warps; write this chunk's partial sums.
#pragma unroll
  for (int s = 0; s < G; ++s)
#pragma unroll
    for (int v = 0; v < V; ++v) red[warp][s][lane * V + v] = acc[s][v];
  __syncthreads();
  for (int o = tid; o < G * TN; o += 32 * kWarps) {
    const int s = o / TN, c = o % TN, col = blockIdx.x * TN + c;
    if (s >= ns || col >= p.N) continue;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += red[w][s][c];
    p.partial[(static_cast<size_t>(blockIdx.y) * p.S + s0 + s) * p.N + col] = sum;
  }
}

// Cluster form, one token (decode): the gridDim.y K chunks of a column tile are one thread-block cluster of NW-warp
// blocks. Each block sums its warps into `tile`; then block q adds, for its slice of the tile, every block's sums
// in chunk order through distributed shared memory, adds the bias and writes y. One launch, no partial sums.
template <typename T, bool VEC, int NW>
__global__ void __launch_bounds__(32 * NW) cluster_kernel(SparseParams p) {
  namespace cg = cooperative_groups;
  constexpr int V = VecLoad<T, VEC>::V;
  constexpr int TN = 32 * V;
  constexpr int NT = 32 * NW;
  __shared__ float xs[1][kMaxChunk];
  __shared__ int idx[kMaxChunk];
  __shared__ int warp_count[NW];
  __shared__ float red[NW][TN];
  __shared__ float tile[TN];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k0 = blockIdx.y * p.chunk;
  float acc[1][V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[0][v] = 0.f;
  sparse_rows<T, VEC, 1, NW>(p, k0, max(0, min(p.chunk, p.K - k0)), 0, 1, xs, idx, warp_count, acc);
#pragma unroll
  for (int v = 0; v < V; ++v) red[warp][lane * V + v] = acc[0][v];
  __syncthreads();
  for (int c = tid; c < TN; c += NT) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) sum += red[w][c];
    tile[c] = sum;
  }
  cg::cluster_group cl = cg::this_cluster();
  cl.sync();
  const int C = static_cast<int>(cl.num_blocks()), q = static_cast<int>(cl.block_rank());
  const int per = (TN + C - 1) / C;
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  for (int c = q * per + tid; c < min(TN, (q + 1) * per); c += NT) {
    const int col = blockIdx.x * TN + c;
    if (col >= p.N) continue;
    float sum = 0.f;
    for (int b = 0; b < C; ++b) sum += cl.map_shared_rank(tile, b)[c];
    if (bias) sum += to_f(bias[col]);
    y[col] = from_f<T>(sum);
  }
  cl.sync();  // keep this block's tile alive until every block of the cluster has read it
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

int64_t env_int(const char* name, int64_t fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoll(s) : fallback;
}

int64_t sparse_max_tokens() {
  static const int64_t v = std::max<int64_t>(0, env_int("HUBMOE_SPARSE_MAX_S", kSparseMaxTokens));
  return v;
}

// Split form, rows per block: the largest power of two up to kMaxChunk that still gives about 8 blocks per SM (so
// that enough weight rows are in flight to saturate memory), but not below kMinChunk.
int chunk_for(int64_t K, int64_t tiles, int64_t groups) {
  int chunk = kMaxChunk;
  while (chunk > kMinChunk && tiles * groups * ((K + chunk - 1) / chunk) < 8 * 132) chunk /= 2;
  return chunk;
}

int64_t tile_cols(const SparseLinearArgs& a) {
  const int V = 16 / static_cast<int>(dtype_size(a.dtype));
  return a.N % V == 0 && aligned16(a.W) ? 32 * V : 32;
}

int group_of(const SparseLinearArgs& a) { return a.S <= 1 ? 1 : a.S <= 2 ? 2 : kGroup; }


// Largest cluster size the current device schedules for cluster_kernel (16 needs the non-portable attribute, which is
// set per device; 0 when clusters are unavailable). Worked out once per device.
template <typename T, bool VEC, int NW>
int max_cluster() {
  constexpr int kDevices = 64;
  static std::atomic<int> known[kDevices] = {};  // the answer + 1; 0 until worked out
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kDevices) {
    cudaGetLastError();
    return 0;
  }
  if (const int k = known[dev].load(std::memory_order_acquire)) return k - 1;
  auto fn = cluster_kernel<T, VEC, NW>;
  int found = 0;
  if (cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    cudaGetLastError();
  } else {
    for (int c = kMaxCluster; c >= 2 && !found; c /= 2) {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(1, c, 1);
      cfg.blockDim = dim3(32 * NW);
      cudaLaunchAttribute attr;
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 1, attr.val.clusterDim.y = c, attr.val.clusterDim.z = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int n = 0;
      if (cudaOccupancyMaxActiveClusters(&n, fn, &cfg) == cudaSuccess && n > 0) found = c;
      else cudaGetLastError();
    }
  }
  known[dev].store(found + 1, std::memory_order_release);
  return found;
}

int max_cluster_for(const SparseLinearArgs& a, int warps) {
  const bool vec = tile_cols(a) > 32, f16 = a.dtype == DType::f16;
  if (warps == 8)
    return f16 ? (vec ? max_cluster<__half, true, 8>() : max_cluster<__half, false, 8>())
               : (vec ? max_cluster<float, true, 8>() : max_cluster<float, false, 8>());
  return f16 ? (vec ? max_cluster<__half, true, 16>() : max_cluster<__half, false, 16>())
             : (vec ? max_cluster<float, true, 16>() : max_cluster<float, false, 16>());
}

template <typename T, bool VEC>
void launch_split(const SparseParams& p, dim3 grid, int G, cudaStream_t s) {
  if (G == 1) split_kernel<T, VEC, 1><<<grid, 32 * kWarps, 0, s>>>(p);
  else if (G == 2) split_kernel<T, VEC, 2><<<grid, 32 * kWarps, 0, s>>>(p);
  else split_kernel<T, VEC, kGroup><<<grid, 32 * kWarps, 0, s>>>(p);
}

template <typename T, bool VEC, int NW>
void launch_cluster(const SparseParams& p, dim3 grid, cudaStream_t s) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(32 * NW);
  cfg.stream = s;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1, attr.val.clusterDim.y = grid.y, attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  cuda_check(cudaLaunchKernelEx(&cfg, cluster_kernel<T, VEC, NW>, p), "cluster kernel launch");
}

// The sparse path's launch shape: warps per block (0: the split form, 4 warps, partial sums and a finalize
// launch; 8 or 16: the cluster form), the K rows per block and the number of K chunks (the cluster size).
struct SparseShape {
  int warps;
  int chunk;
  int chunks;
};

// Warps the cluster form aims for over the whole grid, about 31 per SM on 132 SMs: the cluster size is the power of
// two that puts the grid nearest to it (measured on the H200 at Jamba-v0.1's layer sizes, ../README.md).
constexpr int64_t kTargetWarps = 4096;

SparseShape shape_for(const SparseLinearArgs& a, int warps, int cluster) {
  const int64_t tiles = (a.N + tile_cols(a) - 1) / tile_cols(a);
  const int64_t groups = (a.S + group_of(a) - 1) / group_of(a);
  static const int env_warps = [] {
    const char* s = std::getenv("HUBMOE_SPARSE_WARPS");
    if (!s || !*s) return -1;
    const int64_t w = std::atoll(s);
    return w <= 0 ? 0 : w >= 16 ? 16 : 8;
  }();
  static const int env_cluster = static_cast<int>(std::max<int64_t>(0, env_int("HUBMOE_SPARSE_CLUSTER", 0)));
  if (warps < 0) warps = env_warps;
  if (cluster <= 0) cluster = env_cluster;
  if (warps != 0 && a.K > 0 && a.S == 1) {
    // The cluster that puts the grid nearest kTargetWarps (within a factor √2), with chunks of at least kMinChunk
    // rows; automatic warps: 8 per block, or 16 where even the largest cluster of 8-warp blocks stays short of it
    // (narrow layers: few column tiles).
    auto pick = [&](int w, int most) {
      int c = 1;
      if (cluster > 0) return std::min(cluster, most);
      while (c < most && tiles * c * w * 1.4142 < kTargetWarps && (a.K + 2 * c - 1) / (2 * c) >= kMinChunk) c *= 2;
      return c;
    };
    int w = warps > 0 ? (warps >= 16 ? 16 : 8) : 8;
    int most = max_cluster_for(a, w);
    int c = most > 0 ? pick(w, most) : 0;
    if (warps < 0 && most > 0 && c == most && tiles * c * w * 1.4142 < kTargetWarps) {
      const int most16 = max_cluster_for(a, 16);
      if (most16 > 0) w = 16, most = most16, c = pick(16, most16);
    }
    if (most > 0) {
      const int chunk = static_cast<int>((a.K + c - 1) / c);
      return {w, chunk, static_cast<int>((a.K + chunk - 1) / chunk)};
    }
  }
  const int chunk = chunk_for(a.K, tiles, groups);
  return {0, chunk, static_cast<int>((a.K + chunk - 1) / chunk)};
}

template <typename T>
void launch_sparse(const SparseLinearArgs& a, const SparseShape& sh, float* partial, cudaStream_t s) {
  const int64_t TN = tile_cols(a);
  const bool vec = TN > 32;
  const int G = group_of(a);
  const int64_t tiles = (a.N + TN - 1) / TN, groups = (a.S + G - 1) / G;
  SparseParams p{a.x, a.W, partial, a.bias, a.y, a.mode, a.threshold, static_cast<int>(a.S), static_cast<int>(a.K),
                 static_cast<int>(a.N), sh.chunk};
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(sh.chunks), static_cast<unsigned>(groups));
  if (sh.warps == 0) {
    if (vec) launch_split<T, true>(p, grid, G, s);
    else launch_split<T, false>(p, grid, G, s);
  } else if (sh.warps == 8) {
    if (vec) launch_cluster<T, true, 8>(p, grid, s);
    else launch_cluster<T, false, 8>(p, grid, s);
  } else {
    if (vec) launch_cluster<T, true, 16>(p, grid, s);
    else launch_cluster<T, false, 16>(p, grid, s);
  }
}

}  // namespace

const char* sparse_path_name(SparsePath p) {
  return p == SparsePath::sparse ? "sparse" : p == SparsePath::dense ? "dense" : "automatic";
}

struct SparseLinearRunner::Impl {
  std::mutex mu;
  CublasHandle cublas;
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
  const SparseShape sh = shape_for(a, warps_, cluster_);
  return sh.warps ? 0 : static_cast<size_t>(sh.chunks) * a.S * a.N * 4;
}

std::string SparseLinearRunner::sparse_form(const SparseLinearArgs& a) const {
  const SparseShape sh = shape_for(a, warps_, cluster_);
  if (!sh.warps) return "split, " + std::to_string(sh.chunks) + " chunks of " + std::to_string(sh.chunk);
  return "cluster of " + std::to_string(sh.chunks) + " x " + std::to_string(sh.warps) + " warps, chunks of " +
         std::to_string(sh.chunk);
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
  if (path == SparsePath::sparse || a.K == 0) {
    const SparseShape sh = shape_for(a, warps_, cluster_);
    float* partial = static_cast<float*>(ws);
    if (sh.chunks > 0) {
      if (f16)
        launch_sparse<__half>(a, sh, partial, s);
      else
        launch_sparse<float>(a, sh, partial, s);
      cuda_check(cudaGetLastError(), "kernel launch");
      if (sh.warps) return;  // the cluster form wrote y
    }
    const int chunks = sh.chunks;
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
    Cublas::Handle h = impl_->cublas.bind(*cb, s, "SparseLinear");
    // Row-major y[S, N] = xs[S, K] · W[K, N] is column-major yᵀ = Wᵀ·xsᵀ with W read as column-major [N, K].
    const cudaDataType t = f16 ? CUDA_R_16F : CUDA_R_32F;
    const float one = 1.f, zero = 0.f;
    gemm_check(*cb,
               cb->gemm_ex(h, kCublasOpN, kCublasOpN, static_cast<int>(a.N), static_cast<int>(a.S), static_cast<int>(a.K),
                           &one, a.W, t, static_cast<int>(a.N), ws, t, static_cast<int>(a.K), &zero, a.y, t,
                           static_cast<int>(a.N), kCublasCompute32F, kCublasGemmDefault),
               "SparseLinear", "x·W");
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
