// CUDA MoE. Per call:
//  1. routing on the GPU: per token, fp32 scores and the top k (one warp per token); per-expert counts, their
//     exclusive scan, the list of experts that received tokens, and each (token, slot) entry's row in the
//     expert-grouped order (counting sort);
//  2. the experts, by one of two paths (cuda_ops.h): `skinny` (two launches over every used expert: fc1 with
//     gather, bias, activation and GLU fused, then fc2; weights read once, as 16-byte vectors; no host sync) or
//     `gemm` (rows gathered, then cuBLAS GEMMs per expert with fp32 accumulation, an activation kernel between);
//  3. a combine kernel: y[t] = Σ_j w[t,j]·(fc2 output of entry (t,j) + fc2_bias[e_j]), in slot order. At one token
//     with k ≤ 2 (decode), output-major, the skinny path computes fc2 and this sum in one launch instead.
// Intermediates: the expert hidden activation h is stored in T (it is the fc2 GEMM's input); fc2 outputs are fp32.
// SCAP masks (optional fc1_scap / fc2_scap, per expert (mode, threshold)): fc1's input is masked while the routed
// rows are gathered into expert-grouped order (both paths then read the gathered rows); fc2's input is masked where
// h is stored (the skinny fc1 epilogue, act_kernel, or im_act_kernel), after rounding h to T. The input-major
// skinny kernel applies fc1_scap itself while it stages x (no gather launch).
// Weight layouts (MoeArgs::layout): output-major (fc1 [X, F1, H], fc2 [X, H, I]) as above; input-major (fc1
// [X, H, F1], fc2 [X, I, H]): the gemm path runs the same GEMMs with other transpose flags, and the skinny path
// becomes the sparse kernel im_sparse_kernel (modelled on SparseLinear's): a block stages a K chunk of its token
// group's input rows, keeps the rows where some token's input is non-zero, and reads only those weight rows, writing
// fp32 partial sums per K chunk; im_act_kernel (after fc1) and combine_partials_kernel (after fc2) add the chunks.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cublas_loader.h"
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace hubmoe {
namespace cuda {

namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw OpError(std::string("MoE (CUDA): ") + what + ": " + cudaGetErrorString(e));
}

constexpr int kMaxExperts = 256;  // 8 per lane in the router
constexpr int kWarps = 8;         // warps per block in the expert kernels
constexpr int kSkinnyRows = 2;    // output rows per warp in the skinny kernels
constexpr int kDenseSkinnyMax = 1;  // routing none: tokens up to which the skinny kernels run (MoeRunner::resolve)
constexpr int kLinearGemvMax = 2;   // Linear: tokens up to which the GEMV runs (LinearRunner::resolve)

// SCAP: v = round_T(h) − mode; |v| > thr ? v : 0 (the caller stores round_T of the result). A NaN v is pruned.
template <typename T>
__device__ __forceinline__ float scap_dev(float h, const float* scap, int e) {
  const float v = __fsub_rn(to_f(from_f<T>(h)), scap[2 * e]);
  return fabsf(v) > scap[2 * e + 1] ? v : 0.f;
}

__device__ __forceinline__ float activate_dev(int act, float v) {
  switch (act) {
    case static_cast<int>(Activation::silu):
      return v / (1.f + expf(-v));
    case static_cast<int>(Activation::gelu_erf):
      return 0.5f * v * (1.f + erff(v * 0.70710678118654752440f));
    case static_cast<int>(Activation::gelu_tanh):
      return 0.5f * v * (1.f + tanhf(0.79788456080286535588f * (v + 0.044715f * v * v * v)));
    default:
      return v > 0.f ? v : 0.f;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// ─── routing ──────────────────────────────────────────────────────────────────────────────────────────────────

struct RouteParams {
  const void* logits;
  int logits_f16;
  int S, X, k, softmax, renorm;
  int* idx;         // [S*k] expert of entry (t, j)
  float* w;         // [S*k] its weight
  int* counts;      // [X]
  int* offsets;     // [X+1]
  int* active;      // [X] experts with tokens, ascending
  int* num_active;  // [1]
  int* row_of;      // [S*k] row of entry (t, j) in the grouped order
  int* row_token;   // [S*k] token of each grouped row
  int* row_expert;  // [S*k] expert of each grouped row
};

__device__ __forceinline__ float route_key(float v) { return isnan(v) ? -INFINITY : v; }

// One warp routes token t; lane 0 writes idx/w. Returns nothing; counts are added by the caller from idx.
__device__ void route_token_warp(const RouteParams& p, int t) {
  constexpr int PL = kMaxExperts / 32;
  const int lane = threadIdx.x & 31;
  float v[PL];
#pragma unroll
  for (int j = 0; j < PL; ++j) {
    const int e = lane + 32 * j;
    float x = -INFINITY;
    if (e < p.X) {
      const size_t i = static_cast<size_t>(t) * p.X + e;
      x = p.logits_f16 ? __half2float(static_cast<const __half*>(p.logits)[i]) : static_cast<const float*>(p.logits)[i];
    }
    v[j] = x;
  }
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < PL; ++j) mx = fmaxf(mx, v[j]);
  mx = warp_max(mx);
  float denom = 1.f;
  if (p.softmax) {
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < PL; ++j)
      if (lane + 32 * j < p.X) s += expf(v[j] - mx);
    denom = warp_sum(s);
  }
  unsigned taken = 0;
  float sum = 0.f;
  for (int j = 0; j < p.k; ++j) {
    float bk = -INFINITY;
    int be = 0x7fffffff;
#pragma unroll
    for (int jj = 0; jj < PL; ++jj) {
      const int e = lane + 32 * jj;
      if (e < p.X && !((taken >> jj) & 1u)) {
        const float kv = route_key(v[jj]);
        if (be == 0x7fffffff || kv > bk) {
          bk = kv;
          be = e;
        }
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float ok = __shfl_xor_sync(0xffffffffu, bk, off);
      const int oe = __shfl_xor_sync(0xffffffffu, be, off);
      if (oe != 0x7fffffff && (be == 0x7fffffff || ok > bk || (ok == bk && oe < be))) {
        bk = ok;
        be = oe;
      }
    }
    float raw = 0.f;
    if ((be & 31) == lane) {
#pragma unroll
      for (int jj = 0; jj < PL; ++jj)
        if (jj == (be >> 5)) {
          raw = v[jj];
          taken |= 1u << jj;
        }
    }
    raw = __shfl_sync(0xffffffffu, raw, be & 31);
    const float wt = p.softmax ? expf(raw - mx) / denom : 1.f / (1.f + expf(-raw));
    sum += wt;
    if (lane == 0) {
      p.idx[static_cast<size_t>(t) * p.k + j] = be;
      p.w[static_cast<size_t>(t) * p.k + j] = wt;
    }
  }
  if (lane == 0 && p.renorm && sum > 0.f)
    for (int j = 0; j < p.k; ++j) p.w[static_cast<size_t>(t) * p.k + j] /= sum;
}

// Counts in shared memory → offsets, active list, and each entry's grouped row. Run by one whole block.
__device__ void route_finalize(const RouteParams& p, int* s_count, int* s_cursor) {
  if (threadIdx.x == 0) {
    int off = 0, na = 0;
    for (int e = 0; e < p.X; ++e) {
      const int c = s_count[e];
      p.offsets[e] = off;
      p.counts[e] = c;
      s_cursor[e] = off;
      if (c) p.active[na++] = e;
      off += c;
    }
    p.offsets[p.X] = off;
    *p.num_active = na;
  }
  __syncthreads();
  const int entries = p.S * p.k;
  for (int i = threadIdx.x; i < entries; i += blockDim.x) {
    const int e = p.idx[i];
    const int pos = atomicAdd(&s_cursor[e], 1);
    p.row_of[i] = pos;
    p.row_token[pos] = i / p.k;
    p.row_expert[pos] = e;
  }
}

// Small S: the whole routing in one block (no memset, one launch).
__global__ void route_fused_kernel(RouteParams p) {
  __shared__ int s_count[kMaxExperts], s_cursor[kMaxExperts];
  pdl_wait();
  pdl_trigger();
  for (int e = threadIdx.x; e < p.X; e += blockDim.x) s_count[e] = 0;
  __syncthreads();
  const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int t = warp; t < p.S; t += nwarps) {
    route_token_warp(p, t);
    if ((threadIdx.x & 31) == 0)
      for (int j = 0; j < p.k; ++j) atomicAdd(&s_count[p.idx[static_cast<size_t>(t) * p.k + j]], 1);
  }
  __syncthreads();
  route_finalize(p, s_count, s_cursor);
}

// Large S: top-k over many blocks (global counts, zeroed beforehand), then one block finalises.
__global__ void route_topk_kernel(RouteParams p) {
  const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (t >= p.S) return;
  route_token_warp(p, t);
  if ((threadIdx.x & 31) == 0)
    for (int j = 0; j < p.k; ++j) atomicAdd(&p.counts[p.idx[static_cast<size_t>(t) * p.k + j]], 1);
}

__global__ void route_finalize_kernel(RouteParams p) {
  __shared__ int s_count[kMaxExperts], s_cursor[kMaxExperts];
  for (int e = threadIdx.x; e < p.X; e += blockDim.x) s_count[e] = p.counts[e];
  __syncthreads();
  route_finalize(p, s_count, s_cursor);
}

// Routing none (X = k = 1): every token to expert 0 with weight 1, grouped rows in token order.
__global__ void route_dense_kernel(RouteParams p) {
  pdl_wait();
  pdl_trigger();
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < p.S; t += gridDim.x * blockDim.x) {
    p.idx[t] = 0;
    p.w[t] = 1.f;
    p.row_of[t] = t;
    p.row_token[t] = t;
    p.row_expert[t] = 0;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    p.counts[0] = p.S;
    p.offsets[0] = 0;
    p.offsets[1] = p.S;
    p.active[0] = 0;
    *p.num_active = 1;
  }
}

// ─── skinny expert kernels ────────────────────────────────────────────────────────────────────────────────────

struct SkinnyParams {
  const void* W;          // [X, wrows, K]
  const void* bias;       // fc1: [X, wrows] or null; fc2: unused (added in combine)
  const void* A;          // fc1: x [S, K], or the gathered masked rows [S*k, K] with fc1_scap; fc2: h [S*k, K]
  const int* row_token;   // fc1: A row of grouped row pos, or null (A row = pos) with fc1_scap; fc2: null
  void* out;              // fc1: h [S*k, R] (T); fc2: [S*k, R] (float)
  const float* scap;      // fc1: fc2_scap [X, 2] applied to h as it is stored, or null; fc2: unused
  const int *counts, *offsets, *active, *num_active;
  int K, R, wrows, I, act;
  int dense;              // routing none, fast path: every one of `dense` rows goes to expert 0 (no routing arrays)
};

// One tile of MT grouped rows (tokens) [m0, m0 + MT) of expert e against this warp's weight rows. Rows past cnt
// repeat the last row and are not stored.
template <typename T, int MT, int MODE, bool VEC>
__device__ __forceinline__ void skinny_tile(const SkinnyParams& p, int e, int off, int cnt, int m0, int r0,
                                            const T* const (&wrow)[MODE == 0 ? 2 * kSkinnyRows : kSkinnyRows]) {
  constexpr int P = kSkinnyRows;
  constexpr int NR = MODE == 0 ? 2 * P : P;
  constexpr int V = VecLoad<T, VEC>::V;
  const int lane = threadIdx.x & 31;
  const int K = p.K;
  const T* A = static_cast<const T*>(p.A);
  const T* arow[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const int pos = off + min(m0 + m, cnt - 1);
    arow[m] = A + static_cast<size_t>(p.row_token ? p.row_token[pos] : pos) * K;
  }
  float acc[MT][NR];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int q = 0; q < NR; ++q) acc[m][q] = 0.f;
  // Weight bytes in flight per lane: NR rows × 16 B × the unroll. With one or two tokens the loop is latency-bound
  // and unrolled 4 times (measured on the H200 with test_cuda --dense: out_proj 17.6 µs against 19.1 unrolled twice,
  // 18.1 eight times; the dense MLP's fc1 with GLU, 4 rows a warp, 86.9 µs against 88.0 for fc1 + fc2 unrolled twice).
#pragma unroll(MT <= 2 ? 4 : 2)
  for (int kk = lane * V; kk < K; kk += 32 * V) {
    float wf[NR][V];
#pragma unroll
    for (int q = 0; q < NR; ++q) load_vec<T, VEC>(wrow[q] + kk, wf[q]);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float af[V];
      load_vec<T, VEC>(arow[m] + kk, af);
#pragma unroll
      for (int q = 0; q < NR; ++q)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[m][q] = fmaf(af[v], wf[q][v], acc[m][q]);
    }
  }
  pdl_trigger();  // this block's weight reads are issued: the next kernel may start launching
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int q = 0; q < NR; ++q) acc[m][q] = warp_sum(acc[m][q]);
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int pp = 0; pp < P; ++pp) {
      const int r = r0 + pp;
      if (lane == ((m * P + pp) & 31) && m0 + m < cnt && r < p.R) {
        const size_t o = static_cast<size_t>(off + m0 + m) * p.R + r;
        if constexpr (MODE == 2) {
          static_cast<float*>(p.out)[o] = acc[m][pp];
        } else if constexpr (MODE == 3) {
          const T* bias = static_cast<const T*>(p.bias);
          static_cast<T*>(p.out)[o] = from_f<T>(acc[m][pp] + (bias ? to_f(bias[r]) : 0.f));
        } else {
          const T* bias = static_cast<const T*>(p.bias);
          const size_t bb = static_cast<size_t>(e) * p.wrows;
          const float g = acc[m][pp] + (bias ? to_f(bias[bb + r]) : 0.f);
          float hv = activate_dev(p.act, g);
          if constexpr (MODE == 0) hv *= acc[m][P + pp] + (bias ? to_f(bias[bb + p.I + r]) : 0.f);
          if (p.scap) hv = scap_dev<T>(hv, p.scap, e);
          static_cast<T*>(p.out)[o] = from_f<T>(hv);
        }
      }
    }
}

// Each warp computes kSkinnyRows output rows for every token routed to one expert (blockIdx.y indexes the list of
// experts that received tokens; blocks past its length exit at once). Tokens are taken in tiles of 8, 4, 2 or 1,
// the smallest that covers what remains, so each weight row is read from memory once per 8 tokens and little
// arithmetic is wasted on padding.
// MODE 0: fc1 with GLU (rows r and I+r → act(gate)·up); 1: fc1 without GLU; 2: fc2 (fp32 out, no bias); 3: fc2 of
// routing none's fast path (T out with fc2's bias: y itself, no combine).
// p.dense > 0 (routing none's fast path): rows [0, dense) all belong to expert 0 and no routing arrays are read.
template <typename T, int MODE, bool VEC>
__global__ void __launch_bounds__(32 * kWarps, 2) skinny_kernel(SkinnyParams p) {
  constexpr int P = kSkinnyRows;
  constexpr int NR = MODE == 0 ? 2 * P : P;
  pdl_wait();
  const int a = blockIdx.y;
  if (!p.dense && a >= *p.num_active) return;
  const int e = p.dense ? 0 : p.active[a];
  const int off = p.dense ? 0 : p.offsets[e], cnt = p.dense ? p.dense : p.counts[e];
  const int warp = threadIdx.x >> 5;
  const int r0 = (blockIdx.x * kWarps + warp) * P;
  if (r0 >= p.R) return;
  const T* W = static_cast<const T*>(p.W) + static_cast<size_t>(e) * p.wrows * p.K;
  const T* wrow[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q) {
    const int r = min(r0 + (q % P), p.R - 1);
    wrow[q] = W + static_cast<size_t>(q < P ? r : p.I + r) * p.K;
  }
  for (int m0 = 0; m0 < cnt;) {
    const int rem = cnt - m0;
    if (rem > 4) {
      skinny_tile<T, 8, MODE, VEC>(p, e, off, cnt, m0, r0, wrow);
      m0 += 8;
    } else if (rem > 2) {
      skinny_tile<T, 4, MODE, VEC>(p, e, off, cnt, m0, r0, wrow);
      m0 += 4;
    } else if (rem > 1) {
      skinny_tile<T, 2, MODE, VEC>(p, e, off, cnt, m0, r0, wrow);
      m0 += 2;
    } else {
      skinny_tile<T, 1, MODE, VEC>(p, e, off, cnt, m0, r0, wrow);
      m0 += 1;
    }
  }
}

// One token (S = 1) with KS = k ≤ 2 chosen experts, output-major: fc2 of both experts and the combine in one launch.
// Each warp computes kSkinnyRows output rows: per slot j, those rows of expert idx[j]'s fc2 against h row row_of[j]
// (the slots' weights loaded together, so as many bytes are in flight as with one warp per slot), then
// y[r] = Σ_j w_j·(fc2_j[r] + fc2_bias[idx[j], r]) in slot order, the combine kernel's arithmetic, written in T.
template <typename T, int KS, bool VEC>
__global__ void __launch_bounds__(32 * kWarps, 2) fc2_combine_kernel(SkinnyParams p, const int* idx, const float* w,
                                                                   const int* row_of, const T* b2, T* y) {
  constexpr int P = kSkinnyRows;
  constexpr int V = VecLoad<T, VEC>::V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r0 = (blockIdx.x * kWarps + warp) * P;
  pdl_wait();
  if (r0 >= p.R) return;
  const int K = p.K;
  const T* wrow[KS][P];
  const T* arow[KS];
#pragma unroll
  for (int j = 0; j < KS; ++j) {
    const T* W = static_cast<const T*>(p.W) + static_cast<size_t>(idx[j]) * p.wrows * K;
#pragma unroll
    for (int q = 0; q < P; ++q) wrow[j][q] = W + static_cast<size_t>(min(r0 + q, p.R - 1)) * K;
    arow[j] = static_cast<const T*>(p.A) + static_cast<size_t>(row_of[j]) * K;
  }
  float acc[KS][P];
#pragma unroll
  for (int j = 0; j < KS; ++j)
#pragma unroll
    for (int q = 0; q < P; ++q) acc[j][q] = 0.f;
#pragma unroll 2
  for (int kk = lane * V; kk < K; kk += 32 * V) {
    float wf[KS][P][V], af[KS][V];
#pragma unroll
    for (int j = 0; j < KS; ++j) {
#pragma unroll
      for (int q = 0; q < P; ++q) load_vec<T, VEC>(wrow[j][q] + kk, wf[j][q]);
      load_vec<T, VEC>(arow[j] + kk, af[j]);
    }
#pragma unroll
    for (int j = 0; j < KS; ++j)
#pragma unroll
      for (int q = 0; q < P; ++q)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[j][q] = fmaf(af[j][v], wf[j][q][v], acc[j][q]);
  }
  pdl_trigger();
#pragma unroll
  for (int j = 0; j < KS; ++j)
#pragma unroll
    for (int q = 0; q < P; ++q) acc[j][q] = warp_sum(acc[j][q]);
  if (lane < P && r0 + lane < p.R) {
    const int r = r0 + lane;
    float out = 0.f;
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      float v = 0.f;
#pragma unroll
      for (int q = 0; q < P; ++q)
        if (q == lane) v = acc[j][q];
      if (b2) v += to_f(b2[static_cast<size_t>(idx[j]) * p.R + r]);
      out = fmaf(w[j], v, out);
    }
    y[r] = from_f<T>(out);
  }
}

// ─── input-major skinny (sparse) kernels ──────────────────────────────────────────────────────────────────────

constexpr int kImWarps = 4;                 // warps per block
constexpr int kImThreads = 32 * kImWarps;
constexpr int kImSub = 512;                 // K rows staged in shared memory at a time (a chunk is ≤ 512 or a multiple)
constexpr int kImMinChunk = 64;
constexpr int kImGroup = 4;                 // grouped rows (tokens) per block, at most
constexpr int kImUnroll = 8;                // weight rows in flight per warp

struct ImParams {
  const void* W;         // [X, K, R] input-major: row k of expert e is W[e, k, 0:R]
  const void* A;         // input rows in T: fc1: x [S, K] (through row_token) or the gathered rows [S*k, K]; fc2: h
  const int* row_token;  // A row of grouped row pos, or null (A row = pos)
  const float* scap;     // fc1: fc1_scap [X, 2], applied to A's elements as they are staged, or null; fc2: null
  float* partial;        // [chunks, entries, R] fp32 partial sums
  const int *counts, *offsets, *active, *num_active;
  int K, R, entries, chunk, chunks;
};

// Grid: x = tiles of TN = 32·V columns (a lane holds one 16-byte vector of V columns, or one column without VEC);
// y = active-expert slot × chunks + K chunk (blocks past num_active exit at once); z = groups of G of the expert's
// grouped rows (blocks past its count exit; a block takes groups z, z + gridDim.z, ...).
// Per group and per K sub-chunk of ≤ kImSub rows, the block stages the G input rows in shared memory and compacts,
// in order (so the result is deterministic), the rows k where some token's input is non-zero; each warp then walks
// every kImWarps-th kept row, kImUnroll weight-row slices in flight, with fp32 FMAs. The warps' sums are added in
// shared memory and written as this chunk's partial sums. A zero input contributes nothing, so skipping its weight
// row changes nothing but the bytes read; dense inputs keep every row.
template <typename T, bool VEC, int G>
__global__ void __launch_bounds__(kImThreads) im_sparse_kernel(ImParams p) {
  constexpr int V = VecLoad<T, VEC>::V;
  constexpr int TN = 32 * V;
  __shared__ float xs[G][kImSub];
  __shared__ int idx[kImSub];
  __shared__ int warp_count[kImWarps];
  __shared__ float red[kImWarps][G][TN];
  const int slot = blockIdx.y / p.chunks, ch = blockIdx.y - slot * p.chunks;
  if (slot >= *p.num_active) return;
  const int e = p.active[slot];
  const int off = p.offsets[e], cnt = p.counts[e];
  if (static_cast<int>(blockIdx.z) * G >= cnt) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k_begin = ch * p.chunk, k_end = min(p.K, k_begin + p.chunk);
  const T* A = static_cast<const T*>(p.A);
  // fc1_scap of expert e, fused into the staging (the same arithmetic as gather_rows_scap_kernel): v = x − mode,
  // |v| > threshold ? round_T(v) : 0.
  const bool masked = p.scap != nullptr;
  const float mode = masked ? p.scap[2 * e] : 0.f, thr = masked ? p.scap[2 * e + 1] : 0.f;
  const int c0 = blockIdx.x * TN + lane * V;
  const bool col_ok = c0 < p.R;  // with VEC, R % V == 0, so the whole vector is in range
  const T* W = static_cast<const T*>(p.W) + static_cast<size_t>(e) * p.K * p.R + (col_ok ? c0 : 0);

  for (int m0 = blockIdx.z * G; m0 < cnt; m0 += gridDim.z * G) {
    const int ns = min(G, cnt - m0);
    const T* arow[G];
#pragma unroll
    for (int s = 0; s < G; ++s) {
      const int pos = off + m0 + min(s, ns - 1);
      arow[s] = A + static_cast<size_t>(p.row_token ? p.row_token[pos] : pos) * p.K;
    }
    float acc[G][V];
#pragma unroll
    for (int s = 0; s < G; ++s)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[s][v] = 0.f;

    for (int kb = k_begin; kb < k_end; kb += kImSub) {
      const int n = min(kImSub, k_end - kb);
      // 1. Stage this sub-chunk of the group's inputs; compact, in order, the rows where any token is non-zero.
      int base = 0;
      for (int r0 = 0; r0 < n; r0 += kImThreads) {
        const int r = r0 + tid;
        bool any = false;
        if (r < n) {
#pragma unroll
          for (int s = 0; s < G; ++s) {
            float v = s < ns ? to_f(arow[s][kb + r]) : 0.f;
            if (masked && s < ns) {
              const float d = __fsub_rn(v, mode);
              v = fabsf(d) > thr ? to_f(from_f<T>(d)) : 0.f;
            }
            xs[s][r] = v;
            any = any || v != 0.f;  // a NaN is kept (and propagates, as in the dense product)
          }
        }
        const unsigned mask = __ballot_sync(0xffffffffu, any);
        if (lane == 0) warp_count[warp] = __popc(mask);
        __syncthreads();
        int o = base;
        for (int w = 0; w < warp; ++w) o += warp_count[w];
        if (any) idx[o + __popc(mask & ((1u << lane) - 1u))] = r;
        int total = 0;
        for (int w = 0; w < kImWarps; ++w) total += warp_count[w];
        base += total;
        __syncthreads();
      }
      const int kept = base;

      // 2. This warp's share of the kept rows, kImUnroll in flight.
      if (col_ok) {
        const T* Wk = W + static_cast<size_t>(kb) * p.R;
        int i = warp;
        for (; i + (kImUnroll - 1) * kImWarps < kept; i += kImUnroll * kImWarps) {
          int r[kImUnroll];
          float w[kImUnroll][V];
#pragma unroll
          for (int u = 0; u < kImUnroll; ++u) r[u] = idx[i + u * kImWarps];
#pragma unroll
          for (int u = 0; u < kImUnroll; ++u) load_vec<T, VEC>(Wk + static_cast<size_t>(r[u]) * p.R, w[u]);
#pragma unroll
          for (int u = 0; u < kImUnroll; ++u)
#pragma unroll
            for (int s = 0; s < G; ++s) {
              const float a = xs[s][r[u]];
#pragma unroll
              for (int v = 0; v < V; ++v) acc[s][v] = fmaf(a, w[u][v], acc[s][v]);
            }
        }
        for (; i < kept; i += kImWarps) {
          const int r = idx[i];
          float w[V];
          load_vec<T, VEC>(Wk + static_cast<size_t>(r) * p.R, w);
#pragma unroll
          for (int s = 0; s < G; ++s) {
            const float a = xs[s][r];
#pragma unroll
            for (int v = 0; v < V; ++v) acc[s][v] = fmaf(a, w[v], acc[s][v]);
          }
        }
      }
      __syncthreads();  // xs and idx are restaged for the next sub-chunk
    }

    // 3. Sum the warps; write this chunk's partial sums of the group's rows.
#pragma unroll
    for (int s = 0; s < G; ++s)
#pragma unroll
      for (int v = 0; v < V; ++v) red[warp][s][lane * V + v] = acc[s][v];
    __syncthreads();
    for (int o = tid; o < G * TN; o += kImThreads) {
      const int s = o / TN, c = o % TN, col = blockIdx.x * TN + c;
      if (s >= ns || col >= p.R) continue;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kImWarps; ++w) sum += red[w][s][c];
      p.partial[(static_cast<size_t>(ch) * p.entries + off + m0 + s) * p.R + col] = sum;
    }
    __syncthreads();  // red is reused by the next group
  }
}

// After the input-major fc1: g = Σ_chunks partial + fc1_bias, then h = act(gate)·up (or act(g)), rounded to T, the
// fc2_scap mask when given, stored in T ([entries, I]). partial is [chunks, entries, F1].
template <typename T>
__global__ void im_act_kernel(const float* partial, int chunks, const T* bias, const int* row_expert, T* h,
                              int entries, int I, int F1, int glu, int act, const float* scap) {
  const size_t total = static_cast<size_t>(entries) * I, stride = static_cast<size_t>(entries) * F1;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t pos = i / I;
    const int j = static_cast<int>(i % I);
    const int e = row_expert[pos];
    const size_t bb = static_cast<size_t>(e) * F1;
    const float* pg = partial + pos * F1 + j;
    float gate = 0.f, up = 0.f;
    for (int c = 0; c < chunks; ++c) gate += pg[c * stride];
    if (glu)
      for (int c = 0; c < chunks; ++c) up += pg[c * stride + I];
    float v = activate_dev(act, gate + (bias ? to_f(bias[bb + j]) : 0.f));
    if (glu) v *= up + (bias ? to_f(bias[bb + I + j]) : 0.f);
    if (scap) v = scap_dev<T>(v, scap, e);
    h[i] = from_f<T>(v);
  }
}

// ─── gemm-path kernels ────────────────────────────────────────────────────────────────────────────────────────

// Xp[pos] = x[row_token[pos]], 16 bytes at a time when rows allow it.
__global__ void gather_rows_kernel(const uint8_t* x, const int* row_token, uint8_t* xp, size_t row_bytes, int vec16) {
  const int pos = blockIdx.x;
  const uint8_t* src = x + static_cast<size_t>(row_token[pos]) * row_bytes;
  uint8_t* dst = xp + static_cast<size_t>(pos) * row_bytes;
  if (vec16) {
    for (size_t i = threadIdx.x; i < row_bytes / 16; i += blockDim.x)
      reinterpret_cast<uint4*>(dst)[i] = __ldg(reinterpret_cast<const uint4*>(src) + i);
  } else {
    for (size_t i = threadIdx.x; i < row_bytes; i += blockDim.x) dst[i] = src[i];
  }
}

// Xp[pos] = SCAP mask of x[row_token[pos]] with expert row_expert[pos]'s (mode, threshold): v = x − mode,
// |v| > threshold ? round_T(v) : 0.
template <typename T>
__global__ void gather_rows_scap_kernel(const T* x, const int* row_token, const int* row_expert, const float* scap,
                                        T* xp, int H) {
  const int pos = blockIdx.x;
  const T* src = x + static_cast<size_t>(row_token[pos]) * H;
  T* dst = xp + static_cast<size_t>(pos) * H;
  const int e = row_expert[pos];
  const float mode = scap[2 * e], thr = scap[2 * e + 1];
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = __fsub_rn(to_f(__ldg(src + i)), mode);
    dst[i] = from_f<T>(fabsf(v) > thr ? v : 0.f);
  }
}

// h[pos, j] = act(g[pos, j] + b[e, j]) · (g[pos, I + j] + b[e, I + j])  (or act(g + b) without GLU), then the
// fc2_scap mask of expert e when scap is given.
template <typename T>
__global__ void act_kernel(const T* g, const T* bias, const int* row_expert, T* h, int rows, int I, int F1, int glu,
                           int act, const float* scap) {
  const size_t total = static_cast<size_t>(rows) * I;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t pos = i / I;
    const int j = static_cast<int>(i % I);
    const int e = row_expert[pos];
    const size_t bb = static_cast<size_t>(e) * F1;
    float v = activate_dev(act, to_f(g[pos * F1 + j]) + (bias ? to_f(bias[bb + j]) : 0.f));
    if (glu) v *= to_f(g[pos * F1 + I + j]) + (bias ? to_f(bias[bb + I + j]) : 0.f);
    if (scap) v = scap_dev<T>(v, scap, e);
    h[i] = from_f<T>(v);
  }
}

// ─── combine ──────────────────────────────────────────────────────────────────────────────────────────────────

// y[t, c] = Σ_j w_j·(o[row_of(t, j), c] + fc2_bias[e_j, c]). Grid: x = tiles of kCombineThreads columns, y = tokens
// (grid-stride): at one decode token the H columns are spread over H / kCombineThreads blocks instead of one block
// walking them all (at H = 4096 that block took 13 µs, latency-bound).
constexpr int kCombineThreads = 128;

template <typename T>
__global__ void combine_kernel(const float* o, const int* idx, const float* w, const int* row_of, const T* b2, T* y,
                               int S, int k, int H) {
  pdl_wait();
  pdl_trigger();
  const int c = blockIdx.x * kCombineThreads + threadIdx.x;
  if (c >= H) return;
  for (int t = blockIdx.y; t < S; t += gridDim.y) {
    float acc = 0.f;
    for (int j = 0; j < k; ++j) {
      const size_t ent = static_cast<size_t>(t) * k + j;
      float v = o[static_cast<size_t>(row_of[ent]) * H + c];
      if (b2) v += to_f(b2[static_cast<size_t>(idx[ent]) * H + c]);
      acc = fmaf(w[ent], v, acc);
    }
    y[static_cast<size_t>(t) * H + c] = from_f<T>(acc);
  }
}

// After the input-major fc2: y[t, c] = Σ_j w_j·(Σ_chunks partial[chunk, row_of(t, j), c] + fc2_bias[e_j, c]), with
// partial [chunks, entries, H]. Block (32, kCombineLanes): x = 32 consecutive columns, y = lanes that split the
// chunks (chunk ≡ lane mod kCombineLanes), summed in a fixed order in shared memory (deterministic). Grid: x =
// column tiles, y = tokens (grid-stride).
constexpr int kCombineLanes = 8;

template <typename T>
__global__ void combine_partials_kernel(const float* partial, int chunks, size_t stride, const int* idx, const float* w,
                                        const int* row_of, const T* b2, T* y, int S, int k, int H) {
  __shared__ float red[kCombineLanes][32];
  const int c = blockIdx.x * 32 + threadIdx.x;
  for (int t = blockIdx.y; t < S; t += gridDim.y) {
    float acc = 0.f;
    if (c < H)
      for (int j = 0; j < k; ++j) {
        const size_t ent = static_cast<size_t>(t) * k + j;
        const float* pp = partial + static_cast<size_t>(row_of[ent]) * H + c;
        float sum = 0.f;
        for (int ch = threadIdx.y; ch < chunks; ch += kCombineLanes) sum += pp[ch * stride];
        acc = fmaf(w[ent], sum, acc);
      }
    red[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < H) {
      float v = 0.f;
#pragma unroll
      for (int l = 0; l < kCombineLanes; ++l) v += red[l][threadIdx.x];
      if (b2)
        for (int j = 0; j < k; ++j) {
          const size_t ent = static_cast<size_t>(t) * k + j;
          v = fmaf(w[ent], to_f(b2[static_cast<size_t>(idx[ent]) * H + c]), v);
        }
      y[static_cast<size_t>(t) * H + c] = from_f<T>(v);
    }
    __syncthreads();
  }
}

// ─── host side ────────────────────────────────────────────────────────────────────────────────────────────────

size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

// The input-major sparse kernel's K chunking for one projection (K inputs, R outputs). The chunk depends only on
// the shapes (not on pointer alignment), so that the workspace size does not change with it.
struct ImPlan {
  int G;              // token rows per block
  int64_t groups;     // grid z
  int64_t slots;      // active-expert slots in grid y: min(X, S·k)
  int chunk, chunks;  // K rows per block (staged kImSub at a time), and their count
};

ImPlan im_plan(const MoeArgs& a, int64_t K, int64_t R, int forced_chunk) {
  ImPlan q{};
  const int64_t entries = a.S * a.k;
  q.G = a.S <= 1 ? 1 : a.S <= 2 ? 2 : kImGroup;
  q.groups = std::min<int64_t>((a.S + q.G - 1) / q.G, 65535);
  q.slots = std::min<int64_t>(a.X, entries);
  const int64_t V = 16 / static_cast<int64_t>(dtype_size(a.dtype));
  const int64_t TN = R % V == 0 ? 32 * V : 32;
  const int64_t tiles = (R + TN - 1) / TN;
  // Blocks with work: tiles × chunks × the used experts (about min(X, S·k)) × each one's token groups (S·k rows
  // spread over them).
  const int64_t per_expert = (entries + q.slots - 1) / q.slots;
  const int64_t work = tiles * q.slots * std::max<int64_t>(1, (per_expert + q.G - 1) / q.G);
  auto nchunks = [&](int64_t c) { return (K + c - 1) / c; };
  // As SparseLinear: the largest power of two up to kImSub that still gives about 8 blocks per SM on 132 SMs, not
  // below kImMinChunk. When the grid is many waves deep anyway (many tokens), chunks grow in multiples of kImSub,
  // which keeps the partial sums (chunks × S·k × R floats) small.
  int64_t chunk = kImSub;
  while (chunk > kImMinChunk && work * nchunks(chunk) < 8 * 132) chunk /= 2;
  while (chunk < K && (work * nchunks(chunk) > 16 * 8 * 132 || q.slots * nchunks(chunk) > 65535)) chunk += kImSub;
  if (forced_chunk > 0) {
    chunk = forced_chunk;
    while (q.slots * nchunks(chunk) > 65535) chunk *= 2;
  }
  q.chunk = static_cast<int>(std::min<int64_t>(chunk, std::max<int64_t>(K, 1)));
  q.chunks = static_cast<int>(K > 0 ? nchunks(q.chunk) : 0);
  return q;
}

struct Layout {
  size_t idx, w, row_of, row_token, row_expert, counts, offsets, active, num_active, h, o, xp, g, p1, total;
};

bool input_major_skinny(const MoeArgs& a, MoePath path) {
  return path == MoePath::skinny && a.layout == MoeLayout::input_major;
}

Layout layout(const MoeArgs& a, MoePath path, int im_chunk) {
  const size_t E = static_cast<size_t>(a.S) * a.k, ts = dtype_size(a.dtype), X = static_cast<size_t>(a.X);
  Layout l{};
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t r = at;
    at += align256(bytes);
    return r;
  };
  l.idx = take(E * 4);
  l.w = take(E * 4);
  l.row_of = take(E * 4);
  l.row_token = take(E * 4);
  l.row_expert = take(E * 4);
  l.counts = take(X * 4);
  l.offsets = take((X + 1) * 4);
  l.active = take(X * 4);
  l.num_active = take(4);
  l.h = take(E * a.I * ts);
  if (input_major_skinny(a, path)) {
    // fc1's partial sums [chunks1, E, F1]; fc2's [chunks2, E, H] take the place of o.
    l.p1 = take(static_cast<size_t>(im_plan(a, a.H, a.F1, im_chunk).chunks) * E * a.F1 * 4);
    l.o = take(static_cast<size_t>(std::max(1, im_plan(a, a.I, a.H, im_chunk).chunks)) * E * a.H * 4);
  } else {
    l.o = take(E * a.H * 4);
  }
  // Gathered (masked) rows; routing none's gemm path reads x in place unless it is masked.
  if ((path == MoePath::gemm && (a.routing != Routing::none || a.fc1_scap)) || (a.fc1_scap && !input_major_skinny(a, path)))
    l.xp = take(E * a.H * ts);
  if (path == MoePath::gemm) l.g = take(E * a.F1 * ts);
  l.total = at;
  return l;
}

// One input-major projection: the sparse kernel over (column tiles, slots × chunks, token groups).
template <typename T>
void launch_im(const ImParams& ip, const ImPlan& q, cudaStream_t s) {
  if (ip.R == 0 || q.chunks == 0) return;
  const int V = 16 / static_cast<int>(sizeof(T));
  const bool vec = ip.R % V == 0 && aligned16(ip.W);
  const int TN = vec ? 32 * V : 32;
  const dim3 grid(static_cast<unsigned>((ip.R + TN - 1) / TN), static_cast<unsigned>(q.slots * q.chunks),
                  static_cast<unsigned>(q.groups));
  if (vec) {
    if (q.G == 1) im_sparse_kernel<T, true, 1><<<grid, kImThreads, 0, s>>>(ip);
    else if (q.G == 2) im_sparse_kernel<T, true, 2><<<grid, kImThreads, 0, s>>>(ip);
    else im_sparse_kernel<T, true, kImGroup><<<grid, kImThreads, 0, s>>>(ip);
  } else {
    if (q.G == 1) im_sparse_kernel<T, false, 1><<<grid, kImThreads, 0, s>>>(ip);
    else if (q.G == 2) im_sparse_kernel<T, false, 2><<<grid, kImThreads, 0, s>>>(ip);
    else im_sparse_kernel<T, false, kImGroup><<<grid, kImThreads, 0, s>>>(ip);
  }
}

int grid_for(size_t n) { return static_cast<int>(std::max<size_t>(1, std::min<size_t>((n + 255) / 256, 132 * 8))); }

template <typename T, int MODE>
void launch_skinny(bool vec, dim3 grid, const SkinnyParams& sp, cudaStream_t s) {
  const dim3 block(32 * kWarps);
  cuda_check(vec ? launch_pdl(skinny_kernel<T, MODE, true>, grid, block, 0, s, sp)
                 : launch_pdl(skinny_kernel<T, MODE, false>, grid, block, 0, s, sp),
             "skinny kernel launch");
}

// y[S, N] = x[S, K]·W[N, K]ᵀ + bias, in T, in one skinny launch without routing arrays (MODE 3): the fc2 of routing
// none's fast path and Linear's GEMV.
void launch_dense_gemv(bool f16, const void* W, const void* bias, const void* x, void* y, int S, int K, int N,
                       cudaStream_t s) {
  SkinnyParams p{};
  p.W = W;
  p.bias = bias;
  p.A = x;
  p.out = y;
  p.K = K;
  p.R = N;
  p.wrows = N;
  p.I = N;
  p.dense = S;
  const bool vec = K % (f16 ? 8 : 4) == 0 && aligned16(W) && aligned16(x);
  const dim3 grid((N + kWarps * kSkinnyRows - 1) / (kWarps * kSkinnyRows), 1);
  if (f16)
    launch_skinny<__half, 3>(vec, grid, p, s);
  else
    launch_skinny<float, 3>(vec, grid, p, s);
}

template <typename T>
void launch_fc2_combine(int k, bool vec, dim3 grid, const SkinnyParams& sp, const RouteParams& rp, const T* b2, T* y,
                        cudaStream_t s) {
  const dim3 block(32 * kWarps);
  const int* idx = rp.idx;
  const float* w = rp.w;
  const int* row_of = rp.row_of;
  cudaError_t e;
  if (k == 1)
    e = vec ? launch_pdl(fc2_combine_kernel<T, 1, true>, grid, block, 0, s, sp, idx, w, row_of, b2, y)
            : launch_pdl(fc2_combine_kernel<T, 1, false>, grid, block, 0, s, sp, idx, w, row_of, b2, y);
  else
    e = vec ? launch_pdl(fc2_combine_kernel<T, 2, true>, grid, block, 0, s, sp, idx, w, row_of, b2, y)
            : launch_pdl(fc2_combine_kernel<T, 2, false>, grid, block, 0, s, sp, idx, w, row_of, b2, y);
  cuda_check(e, "fc2/combine kernel launch");
}

}  // namespace

const char* moe_path_name(MoePath p) {
  return p == MoePath::skinny ? "skinny" : p == MoePath::gemm ? "gemm" : "automatic";
}

bool cublas_available(std::string* why) { return load_cublas(why) != nullptr; }

struct MoeRunner::Impl {
  std::mutex mu;
  CublasHandle cublas;
  int* pinned = nullptr;
  size_t pinned_count = 0;
  ~Impl() {
    if (pinned) cudaFreeHost(pinned);
  }
};

MoeRunner::MoeRunner() : impl_(new Impl()) {}
MoeRunner::~MoeRunner() = default;

// Skinny while tokens per expert are few: each expert's weights are then read once at full bandwidth, and no host
// synchronisation is needed. Past that, tensor-core GEMMs win.
static int64_t skinny_max_tokens() {
  static const int64_t v = [] {
    const char* s = std::getenv("HUBMOE_MOE_SKINNY_MAX_S");
    return s ? std::max<int64_t>(0, std::atoll(s)) : int64_t(16);
  }();
  return v;
}

MoePath MoeRunner::resolve(const MoeArgs& a, MoePath requested) const {
  MoePath p = requested;
  // Routing none sends all S tokens to its one expert. At Jamba's MLP size on the H200 (test_cuda --dense) the
  // skinny kernels match cuBLAS at one token (89 us, 3.97 TB/s of weights, in two launches instead of three), are 4 %
  // slower at 2, 27 % at 4, twice as slow at 8 (their fp32 FMAs per weight byte grow with the tokens) and four times
  // at 16 (a second token tile reads the weights again).
  const int64_t most = a.routing == Routing::none ? std::min<int64_t>(kDenseSkinnyMax, skinny_max_tokens()) : skinny_max_tokens();
  if (p == MoePath::automatic) p = a.S <= most ? MoePath::skinny : MoePath::gemm;
  if (p == MoePath::gemm && !load_cublas(nullptr)) p = MoePath::skinny;
  return p;
}

size_t MoeRunner::workspace_bytes(const MoeArgs& a, MoePath path) const { return layout(a, path, im_chunk_).total; }

void MoeRunner::run(const MoeArgs& a, void* ws, size_t ws_bytes, void* stream_ptr, MoePath path) {
  if (a.X > kMaxExperts)
    throw OpError("MoE (CUDA): " + std::to_string(a.X) + " experts; at most " + std::to_string(kMaxExperts));
  if (a.S * a.k >= (int64_t(1) << 31) || a.H >= (int64_t(1) << 31) || a.F1 >= (int64_t(1) << 31) ||
      a.I >= (int64_t(1) << 31))
    throw OpError("MoE (CUDA): sizes exceed 32-bit indexing");
  if (a.S == 0) return;
  path = resolve(a, path);
  const Layout l = layout(a, path, im_chunk_);
  if (ws_bytes < l.total) throw OpError("MoE (CUDA): workspace too small");
  auto s = static_cast<cudaStream_t>(stream_ptr);
  auto at = [&](size_t off) { return static_cast<uint8_t*>(ws) + off; };
  const int S = static_cast<int>(a.S), k = a.k, X = static_cast<int>(a.X), H = static_cast<int>(a.H),
            I = static_cast<int>(a.I), F1 = static_cast<int>(a.F1);
  const int entries = S * k;

  RouteParams rp;
  rp.logits = a.logits;
  rp.logits_f16 = a.logits_dtype == DType::f16;
  rp.S = S;
  rp.X = X;
  rp.k = k;
  rp.softmax = a.routing == Routing::softmax;
  rp.renorm = a.renormalize;
  rp.idx = reinterpret_cast<int*>(at(l.idx));
  rp.w = reinterpret_cast<float*>(at(l.w));
  rp.counts = reinterpret_cast<int*>(at(l.counts));
  rp.offsets = reinterpret_cast<int*>(at(l.offsets));
  rp.active = reinterpret_cast<int*>(at(l.active));
  rp.num_active = reinterpret_cast<int*>(at(l.num_active));
  rp.row_of = reinterpret_cast<int*>(at(l.row_of));
  rp.row_token = reinterpret_cast<int*>(at(l.row_token));
  rp.row_expert = reinterpret_cast<int*>(at(l.row_expert));
  const bool f16 = a.dtype == DType::f16;
  const size_t ts = dtype_size(a.dtype);
  const bool dense = a.routing == Routing::none;
  const bool im = a.layout == MoeLayout::input_major;
  // A dense MLP at a few tokens, output-major and unmasked: no routing launch; the skinny fc1 below takes every token
  // for expert 0 without routing arrays, and fc2 with its bias writes y (two launches).
  const bool dense_fast = dense && path == MoePath::skinny && !im && !a.fc1_scap && !a.fc2_scap;
  if (dense) {
    if (!dense_fast)
      cuda_check(launch_pdl(route_dense_kernel, dim3(grid_for(static_cast<size_t>(S))), dim3(256), 0, s, rp),
                 "routing kernel launch");
  } else if (S <= 256) {
    const int threads = std::min(1024, std::max(64, S * 32));
    cuda_check(launch_pdl(route_fused_kernel, dim3(1), dim3(threads), 0, s, rp), "routing kernel launch");
  } else {
    cuda_check(cudaMemsetAsync(rp.counts, 0, static_cast<size_t>(X) * 4, s), "memset");
    route_topk_kernel<<<(S + 7) / 8, 256, 0, s>>>(rp);
    route_finalize_kernel<<<1, 1024, 0, s>>>(rp);
  }

  void* h = at(l.h);
  float* o = reinterpret_cast<float*>(at(l.o));
  // fc1_scap: the routed rows, masked with their expert's (mode, threshold), in expert-grouped order (both paths of
  // the output-major layout, and the gemm path of the input-major one; the input-major skinny kernel masks x as it
  // stages it).
  if (a.fc1_scap && !input_major_skinny(a, path)) {
    if (f16)
      gather_rows_scap_kernel<__half><<<entries, 128, 0, s>>>(static_cast<const __half*>(a.x), rp.row_token,
                                                              rp.row_expert, a.fc1_scap,
                                                              reinterpret_cast<__half*>(at(l.xp)), H);
    else
      gather_rows_scap_kernel<float><<<entries, 128, 0, s>>>(static_cast<const float*>(a.x), rp.row_token,
                                                             rp.row_expert, a.fc1_scap,
                                                             reinterpret_cast<float*>(at(l.xp)), H);
  }
  if (path == MoePath::skinny && im) {
    // fc1: partial sums [chunks1, entries, F1] of the rows where the input (masked with fc1_scap as it is staged)
    // is non-zero; then the bias, act/GLU and fc2_scap into h (T). fc2: partial sums [chunks2, entries, H] of h's
    // non-zero rows, into o; the combine adds the chunks.
    const ImPlan q1 = im_plan(a, H, F1, im_chunk_), q2 = im_plan(a, I, H, im_chunk_);
    float* part1 = reinterpret_cast<float*>(at(l.p1));
    ImParams p1{};
    p1.W = a.fc1;
    p1.A = a.x;
    p1.row_token = rp.row_token;
    p1.scap = a.fc1_scap;  // applied while staging x: no gather launch
    p1.partial = part1;
    p1.counts = rp.counts;
    p1.offsets = rp.offsets;
    p1.active = rp.active;
    p1.num_active = rp.num_active;
    p1.K = H;
    p1.R = F1;
    p1.entries = entries;
    p1.chunk = q1.chunk;
    p1.chunks = q1.chunks;
    ImParams p2 = p1;
    p2.W = a.fc2;
    p2.A = h;
    p2.row_token = nullptr;
    p2.scap = nullptr;
    p2.partial = o;
    p2.K = I;
    p2.R = H;
    p2.chunk = q2.chunk;
    p2.chunks = q2.chunks;
    const size_t nh = static_cast<size_t>(entries) * I;
    if (f16) {
      launch_im<__half>(p1, q1, s);
      im_act_kernel<__half><<<grid_for(nh), 256, 0, s>>>(part1, q1.chunks, static_cast<const __half*>(a.fc1_bias),
                                                         rp.row_expert, static_cast<__half*>(h), entries, I, F1, a.glu,
                                                         static_cast<int>(a.act), a.fc2_scap);
      launch_im<__half>(p2, q2, s);
    } else {
      launch_im<float>(p1, q1, s);
      im_act_kernel<float><<<grid_for(nh), 256, 0, s>>>(part1, q1.chunks, static_cast<const float*>(a.fc1_bias),
                                                        rp.row_expert, static_cast<float*>(h), entries, I, F1, a.glu,
                                                        static_cast<int>(a.act), a.fc2_scap);
      launch_im<float>(p2, q2, s);
    }
    const dim3 grid(static_cast<unsigned>((H + 31) / 32), static_cast<unsigned>(std::min(S, 65535)));
    const dim3 block(32, kCombineLanes);
    const size_t stride = static_cast<size_t>(entries) * H;
    if (H == 0) {
      // nothing to combine
    } else if (f16)
      combine_partials_kernel<__half><<<grid, block, 0, s>>>(o, q2.chunks, stride, rp.idx, rp.w, rp.row_of,
                                                             static_cast<const __half*>(a.fc2_bias),
                                                             static_cast<__half*>(a.y), S, k, H);
    else
      combine_partials_kernel<float><<<grid, block, 0, s>>>(o, q2.chunks, stride, rp.idx, rp.w, rp.row_of,
                                                            static_cast<const float*>(a.fc2_bias),
                                                            static_cast<float*>(a.y), S, k, H);
    cuda_check(cudaGetLastError(), "kernel launch");
    return;
  }
  if (path == MoePath::skinny) {
    const int max_active = std::min<int>(X, entries);
    const int V = static_cast<int>(16 / ts);
    SkinnyParams p1{};
    p1.W = a.fc1;
    p1.bias = a.fc1_bias;
    p1.A = a.fc1_scap ? static_cast<const void*>(at(l.xp)) : a.x;
    p1.row_token = a.fc1_scap || dense_fast ? nullptr : rp.row_token;
    p1.out = h;
    p1.scap = a.fc2_scap;
    p1.counts = rp.counts;
    p1.offsets = rp.offsets;
    p1.active = rp.active;
    p1.num_active = rp.num_active;
    p1.K = H;
    p1.R = I;
    p1.wrows = F1;
    p1.I = I;
    p1.act = static_cast<int>(a.act);
    p1.dense = dense_fast ? S : 0;
    const bool vec1 = H % V == 0 && aligned16(a.fc1) && aligned16(p1.A);
    const dim3 g1((I + kWarps * kSkinnyRows - 1) / (kWarps * kSkinnyRows), max_active);
    if (a.glu) {
      if (f16)
        launch_skinny<__half, 0>(vec1, g1, p1, s);
      else
        launch_skinny<float, 0>(vec1, g1, p1, s);
    } else {
      if (f16)
        launch_skinny<__half, 1>(vec1, g1, p1, s);
      else
        launch_skinny<float, 1>(vec1, g1, p1, s);
    }
    if (dense_fast) {
      launch_dense_gemv(f16, a.fc2, a.fc2_bias, h, a.y, S, I, H, s);
      return;
    }
    SkinnyParams p2 = p1;
    p2.W = a.fc2;
    p2.bias = nullptr;
    p2.A = h;
    p2.row_token = nullptr;
    p2.out = o;
    p2.scap = nullptr;
    p2.K = I;
    p2.R = H;
    p2.wrows = H;
    const bool vec2 = I % V == 0 && aligned16(a.fc2) && aligned16(h);
    if (S == 1 && k <= 2) {
      // One decode token: fc2 of its k experts and the combine in one launch, straight into y.
      const dim3 g2((H + kWarps * kSkinnyRows - 1) / (kWarps * kSkinnyRows));
      if (f16) {
        launch_fc2_combine<__half>(k, vec2, g2, p2, rp, static_cast<const __half*>(a.fc2_bias), static_cast<__half*>(a.y), s);
      } else {
        launch_fc2_combine<float>(k, vec2, g2, p2, rp, static_cast<const float*>(a.fc2_bias), static_cast<float*>(a.y), s);
      }
      return;
    }
    const dim3 g2((H + kWarps * kSkinnyRows - 1) / (kWarps * kSkinnyRows), max_active);
    if (f16)
      launch_skinny<__half, 2>(vec2, g2, p2, s);
    else
      launch_skinny<float, 2>(vec2, g2, p2, s);
  } else {
    std::string why;
    const Cublas* cb = load_cublas(&why);
    if (!cb) throw OpError("MoE (CUDA): " + why);
    // Routing none: the grouped rows are the tokens in order, so x is read in place (unless masked above).
    const uint8_t* xp = dense && !a.fc1_scap ? static_cast<const uint8_t*>(a.x) : at(l.xp);
    void* g = at(l.g);
    const size_t row_bytes = static_cast<size_t>(H) * ts;
    if (!a.fc1_scap && !dense)  // else gathered with the mask above, or x itself
      gather_rows_kernel<<<entries, 128, 0, s>>>(static_cast<const uint8_t*>(a.x), rp.row_token, at(l.xp), row_bytes,
                                                 row_bytes % 16 == 0 && aligned16(a.x));
    std::lock_guard<std::mutex> lock(impl_->mu);
    // The per-expert GEMM sizes must be known on the host: one small device→host copy and a stream sync.
    if (impl_->pinned_count < static_cast<size_t>(X)) {
      if (impl_->pinned) cudaFreeHost(impl_->pinned);
      impl_->pinned = nullptr;
      cuda_check(cudaMallocHost(reinterpret_cast<void**>(&impl_->pinned), static_cast<size_t>(X) * 4), "cudaMallocHost");
      impl_->pinned_count = static_cast<size_t>(X);
    }
    Cublas::Handle handle = impl_->cublas.bind(*cb, s, "MoE");
    if (dense) {  // known on the host: every token in expert 0
      impl_->pinned[0] = S;
    } else {
      cuda_check(cudaMemcpyAsync(impl_->pinned, rp.counts, static_cast<size_t>(X) * 4, cudaMemcpyDeviceToHost, s),
                 "copy counts");
      cuda_check(cudaStreamSynchronize(s), "stream sync for expert counts");
    }
    const cudaDataType ab = f16 ? CUDA_R_16F : CUDA_R_32F;
    const float one = 1.f, zero = 0.f;
    // Output-major: row-major C[c, n] = A[c, K] · W[n, K]ᵀ is column-major Cᵀ = W·Aᵀ: gemm(T, N, m = n, n = c,
    // k = K, lda = K). Input-major: C[c, n] = A[c, K] · W[K, n], and W read column-major is Wᵀ [n, K]: gemm(N, N,
    // m = n, n = c, k = K, lda = n).
    int off = 0;
    for (int e = 0; e < X; ++e) {
      const int c = impl_->pinned[e];
      if (c) {
        gemm_check(*cb, cb->gemm_ex(handle, im ? kCublasOpN : kCublasOpT, kCublasOpN, F1, c, H, &one,
                               static_cast<const uint8_t*>(a.fc1) + static_cast<size_t>(e) * F1 * H * ts, ab,
                               im ? F1 : H,
                               xp + static_cast<size_t>(off) * H * ts, ab, H, &zero,
                               static_cast<uint8_t*>(g) + static_cast<size_t>(off) * F1 * ts, ab, F1,
                               kCublasCompute32F, kCublasGemmDefault),
                   "MoE", "fc1");
      }
      off += c;
    }
    {
      const size_t total = static_cast<size_t>(entries) * I;
      const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 132 * 16));
      if (f16)
        act_kernel<__half><<<blocks, 256, 0, s>>>(static_cast<const __half*>(g), static_cast<const __half*>(a.fc1_bias),
                                                  rp.row_expert, static_cast<__half*>(h), entries, I, F1, a.glu,
                                                  static_cast<int>(a.act), a.fc2_scap);
      else
        act_kernel<float><<<blocks, 256, 0, s>>>(static_cast<const float*>(g), static_cast<const float*>(a.fc1_bias),
                                                 rp.row_expert, static_cast<float*>(h), entries, I, F1, a.glu,
                                                 static_cast<int>(a.act), a.fc2_scap);
    }
    // Routing none without fc2 bias: fc2 writes y (T) itself and no combine is needed.
    const bool direct = dense && !a.fc2_bias;
    off = 0;
    for (int e = 0; e < X; ++e) {
      const int c = impl_->pinned[e];
      if (c) {
        void* out = direct ? a.y : static_cast<void*>(o + static_cast<size_t>(off) * H);
        gemm_check(*cb, cb->gemm_ex(handle, im ? kCublasOpN : kCublasOpT, kCublasOpN, H, c, I, &one,
                               static_cast<const uint8_t*>(a.fc2) + static_cast<size_t>(e) * H * I * ts, ab,
                               im ? H : I,
                               static_cast<const uint8_t*>(h) + static_cast<size_t>(off) * I * ts, ab, I, &zero,
                               out, direct ? ab : CUDA_R_32F, H, kCublasCompute32F, kCublasGemmDefault),
                   "MoE", "fc2");
      }
      off += c;
    }
    if (direct) {
      cuda_check(cudaGetLastError(), "kernel launch");
      return;
    }
  }
  const dim3 cgrid((H + kCombineThreads - 1) / kCombineThreads, static_cast<unsigned>(std::min(S, 65535)));
  if (f16)
    cuda_check(launch_pdl(combine_kernel<__half>, cgrid, dim3(kCombineThreads), 0, s, static_cast<const float*>(o),
                          static_cast<const int*>(rp.idx), static_cast<const float*>(rp.w), static_cast<const int*>(rp.row_of),
                          static_cast<const __half*>(a.fc2_bias), static_cast<__half*>(a.y), S, k, H),
               "combine kernel launch");
  else
    cuda_check(launch_pdl(combine_kernel<float>, cgrid, dim3(kCombineThreads), 0, s, static_cast<const float*>(o),
                          static_cast<const int*>(rp.idx), static_cast<const float*>(rp.w), static_cast<const int*>(rp.row_of),
                          static_cast<const float*>(a.fc2_bias), static_cast<float*>(a.y), S, k, H),
               "combine kernel launch");
  cuda_check(cudaGetLastError(), "kernel launch");
}

// ─── Linear ───────────────────────────────────────────────────────────────────────────────────────────────────

namespace {

template <typename T>
__global__ void add_bias_kernel(T* y, const T* bias, size_t total, int N) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + to_f(bias[i % N]));
}

// At the Jamba period's out_proj (K 8192 → 4096, fp16) on the H200 (test_cuda --dense): the GEMV 17.6 us against
// cuBLAS's 21.8 us at one token, 18.1 against 21.6 at two (before the deeper unroll: 21.1 against 21.8 at four).
int64_t linear_gemv_max_tokens() {
  static const int64_t v = [] {
    const char* s = std::getenv("HUBMOE_LINEAR_GEMV_MAX_S");
    return s ? std::max<int64_t>(0, std::atoll(s)) : int64_t(kLinearGemvMax);
  }();
  return v;
}

}  // namespace

const char* linear_path_name(LinearPath p) {
  return p == LinearPath::gemv ? "gemv" : p == LinearPath::gemm ? "gemm" : "automatic";
}

struct LinearRunner::Impl {
  std::mutex mu;
  CublasHandle cublas;
};

LinearRunner::LinearRunner() : impl_(new Impl()) {}
LinearRunner::~LinearRunner() = default;

LinearPath LinearRunner::resolve(const LinearArgs& a, LinearPath requested) const {
  LinearPath p = requested;
  if (p == LinearPath::automatic) p = a.S <= linear_gemv_max_tokens() ? LinearPath::gemv : LinearPath::gemm;
  if (p == LinearPath::gemm && !load_cublas(nullptr)) p = LinearPath::gemv;
  return p;
}

void LinearRunner::run(const LinearArgs& a, void* stream_ptr, LinearPath path) {
  if (a.S == 0 || a.N == 0) return;
  if (a.S >= (int64_t(1) << 31) || a.K >= (int64_t(1) << 31) || a.N >= (int64_t(1) << 31))
    throw OpError("Linear (CUDA): sizes exceed 32-bit indexing");
  auto s = static_cast<cudaStream_t>(stream_ptr);
  const bool f16 = a.dtype == DType::f16;
  const int S = static_cast<int>(a.S), K = static_cast<int>(a.K), N = static_cast<int>(a.N);
  path = resolve(a, path);
  if (path == LinearPath::gemv) {
    launch_dense_gemv(f16, a.W, a.bias, a.x, a.y, S, K, N, s);
    return;
  }
  std::string why;
  const Cublas* cb = load_cublas(&why);
  if (!cb) throw OpError("Linear (CUDA): " + why);
  const cudaDataType t = f16 ? CUDA_R_16F : CUDA_R_32F;
  const float one = 1.f, zero = 0.f;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    Cublas::Handle handle = impl_->cublas.bind(*cb, s, "Linear");
    // Row-major y[S, N] = x[S, K] · W[N, K]ᵀ is column-major yᵀ = W·xᵀ: gemm(T, N, m = N, n = S, k = K, lda = K).
    gemm_check(*cb, cb->gemm_ex(handle, kCublasOpT, kCublasOpN, N, S, K, &one, a.W, t, K, a.x, t, K, &zero, a.y, t, N,
                                kCublasCompute32F, kCublasGemmDefault),
               "Linear", "y");
  }
  if (a.bias) {
    const size_t total = static_cast<size_t>(S) * N;
    if (f16)
      add_bias_kernel<__half><<<grid_for(total), 256, 0, s>>>(static_cast<__half*>(a.y), static_cast<const __half*>(a.bias),
                                                              total, N);
    else
      add_bias_kernel<float><<<grid_for(total), 256, 0, s>>>(static_cast<float*>(a.y), static_cast<const float*>(a.bias),
                                                             total, N);
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess)
    throw OpError(std::string("Linear (CUDA): kernel launch: ") + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace hubmoe
