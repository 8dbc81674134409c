// CUDA MambaMixer. Two paths:
//  - decode (T = 1, at most kMaxRows rows; the sizes `decode_path` accepts): three launches.
//      1. conv_xproj_kernel: a block takes a chunk of channels (about 128 blocks over E), runs their causal conv
//         step for every row (u, the conv state), keeps u in shared memory and writes x_proj's partial sums over its
//         chunk, fp32 [chunks, B, J].
//      2. reduce_kernel: adds the chunks in a fixed order (deterministic) and rounds xdbl to T.
//      3. step_kernel: 32 channels of one row per block; it loads the row's xdbl, applies the dt/B/C norms (every
//         block recomputes them: J values), then runs dt_proj's columns, softplus, the scan step, D·u and the gate.
//    The three are launched as programmatic dependent launches (cuda_common.cuh): step_kernel loads its dt_proj
//    columns, states, u and z while the reduce kernel still runs, and waits only for xdbl.
//    The chain below takes six launches at one decode token (MambaConv, cuBLAS's split-K GEMV and its reduction,
//    SplitRMSNorm, a GEMV, SelectiveScan); in a replayed CUDA graph on an H200 the decode path took 12.5 µs against
//    18.5 at Jamba-v0.1's size and 7.9 against 15.2 at BlackMamba-2.8B's (test_cuda --mixer).
//  - chain (anything else, and more rows, where the GEMMs share each weight read between the rows): the chain of the
//    op's definition with the ops' own kernels (MambaConv, SplitRMSNorm or a split of B and C, SelectiveScan) and two
//    cuBLAS GEMMs, in scratch memory.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "cublas_loader.h"
#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "mamba_mixer.h"
#include "split_rms_norm.h"

namespace hubmoe {
namespace cuda {

namespace {

constexpr int kMaxRows = 4;       // decode path: rows (batch) per call (more: the chain, whose GEMMs share the weight reads)
constexpr int kMaxRowsDtRank = 128;  // … and only one row above this dt_rank
constexpr int kMaxJ = 4096;       // decode path: dt_rank + 2·d_state
constexpr int kConvThreads = 256;
constexpr int kStepWarps = 16;    // step_kernel: 32 channels per block, warps split dt_rank and d_state
constexpr int kDtRegs = 16;       // step_kernel: dt_proj rows per thread held in registers (dt_rank ≤ 256)
constexpr int kReduceCols = 32, kReduceGroups = 32;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw OpError(std::string("MambaMixer (CUDA): ") + what + ": " + cudaGetErrorString(e));
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Channels per conv_xproj block: about 128 blocks over E, in multiples of 32, at least 32.
int conv_chunk(int64_t E) {
  const int64_t c = (E + 127) / 128;
  return static_cast<int>(std::max<int64_t>(32, (c + 31) / 32 * 32));
}

struct DecodeParams {
  const void *xz, *mask, *conv_w, *conv_b, *conv_state, *x_proj, *dt_proj;
  const void* norm[3];
  const float *dt_bias, *A, *D, *ssm_state;
  void *conv_state_out, *y, *u, *xdbl;
  float *partial, *ssm_state_out;
  int B, E, K, N, R, J, chunk, chunks;
  float eps;
};

// One block per chunk of channels: the conv step of every row's chunk (u kept in shared memory), then one thread per
// column of x_proj walks the chunk's rows.
template <typename T, int MAXB>
__global__ void __launch_bounds__(kConvThreads) conv_xproj_kernel(DecodeParams p) {
  extern __shared__ float u_s[];  // [B][chunk]
  pdl_wait();
  pdl_trigger();  // one wave: the reduce kernel's blocks may wait alongside
  const int e0 = blockIdx.x * p.chunk;
  const int ne = min(p.chunk, p.E - e0);
  const int E = p.E, K = p.K, K1 = p.K - 1;
  const T* xz = static_cast<const T*>(p.xz);
  const T* w = static_cast<const T*>(p.conv_w);
  const T* bias = static_cast<const T*>(p.conv_b);
  const T* st = static_cast<const T*>(p.conv_state);
  T* st_out = static_cast<T*>(p.conv_state_out);
  for (int i = threadIdx.x; i < p.B * ne; i += kConvThreads) {
    const int b = i / ne, c = i % ne, e = e0 + c;
    const float m = to_f(static_cast<const T*>(p.mask)[b]);
    const float xv = to_f(from_f<T>(m * to_f(xz[static_cast<size_t>(b) * 2 * E + e])));  // mask · x rounded to T
    const T* s = st + (static_cast<size_t>(b) * E + e) * K1;
    float acc = bias ? to_f(bias[e]) : 0.f;
    for (int k = 0; k < K1; ++k) acc += to_f(w[static_cast<size_t>(e) * K + k]) * to_f(s[k]);
    acc += to_f(w[static_cast<size_t>(e) * K + K1]) * xv;
    const T uu = from_f<T>(m * (acc / (1.f + __expf(-acc))));
    static_cast<T*>(p.u)[static_cast<size_t>(b) * E + e] = uu;
    u_s[b * p.chunk + c] = to_f(uu);
    T* so = st_out + (static_cast<size_t>(b) * E + e) * K1;
    for (int j = 0; j < K1; ++j) so[j] = j + 1 < K1 ? s[j + 1] : from_f<T>(xv);
  }
  __syncthreads();
  const T* xp = static_cast<const T*>(p.x_proj) + static_cast<size_t>(e0) * p.J;
  for (int j = threadIdx.x; j < p.J; j += kConvThreads) {
    float acc[MAXB];
#pragma unroll
    for (int b = 0; b < MAXB; ++b) acc[b] = 0.f;
    for (int c = 0; c < ne; ++c) {
      const float wv = to_f(xp[static_cast<size_t>(c) * p.J + j]);
#pragma unroll
      for (int b = 0; b < MAXB; ++b)
        if (b < p.B) acc[b] += u_s[b * p.chunk + c] * wv;
    }
#pragma unroll
    for (int b = 0; b < MAXB; ++b)
      if (b < p.B) p.partial[(static_cast<size_t>(blockIdx.x) * p.B + b) * p.J + j] = acc[b];
  }
}

template <typename T>
__global__ void __launch_bounds__(kReduceCols* kReduceGroups) reduce_kernel(DecodeParams p) {
  __shared__ float s[kReduceGroups][kReduceCols + 1];
  pdl_wait();
  pdl_trigger();
  const int lane = threadIdx.x % kReduceCols, g = threadIdx.x / kReduceCols;
  const int col = blockIdx.x * kReduceCols + lane, b = blockIdx.y;
  float acc = 0.f;
  if (col < p.J) {
    const float* src = p.partial + static_cast<size_t>(b) * p.J + col;
    const size_t stride = static_cast<size_t>(p.B) * p.J;
#pragma unroll 8
    for (int c = g; c < p.chunks; c += kReduceGroups) acc += src[c * stride];
  }
  s[g][lane] = acc;
  __syncthreads();
  // Groups added pairwise in a fixed tree: deterministic.
  for (int h = kReduceGroups / 2; h > 0; h >>= 1) {
    if (g < h) s[g][lane] += s[g + h][lane];
    __syncthreads();
  }
  if (g == 0 && col < p.J) static_cast<T*>(p.xdbl)[static_cast<size_t>(b) * p.J + col] = from_f<T>(s[0][lane]);
}

// 32 channels of one row per block (lane = channel): warp w adds dt_proj rows w, w + 16, … and advances states
// n = w, w + 16, …; the warps' sums meet in shared memory in a fixed order. Every global load that does not depend on
// xdbl (dt_proj's column, A, the state, u, z, D, dt_bias, the norm weights) is issued first, so that their latencies
// overlap the row's load and norms.
template <typename T>
__global__ void __launch_bounds__(32 * kStepWarps) step_kernel(DecodeParams p) {
  extern __shared__ float v[];  // [J]: dt, B, C of this row (normed), as T values
  __shared__ float part[kStepWarps][3];
  __shared__ float inv[3];
  __shared__ float red[kStepWarps][33];
  __shared__ float delta[32];
  const int J = p.J, R = p.R, N = p.N, E = p.E, b = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.x * 32 + lane;
  const bool live = e < E;
  const size_t be = static_cast<size_t>(b) * E + (live ? e : 0);
  const T* dp = static_cast<const T*>(p.dt_proj) + (live ? e : 0);
  float wr[kDtRegs];
#pragma unroll
  for (int k = 0; k < kDtRegs; ++k) {
    const int r = warp + k * kStepWarps;
    wr[k] = live && r < R ? to_f(dp[static_cast<size_t>(r) * E]) : 0.f;
  }
  const float* A = p.A + static_cast<size_t>(live ? e : 0) * N;
  const float* h0 = p.ssm_state + be * N;
  const bool first = live && warp < N;
  const float a_first = first ? A[warp] * 1.4426950408889634f : 0.f;  // exp(Δ·A) = 2^(Δ·A·log2 e)
  const float h_first = first ? h0[warp] : 0.f;
  const float x = live ? to_f(static_cast<const T*>(p.u)[be]) : 0.f;
  const float zv = live && warp == 0 ? to_f(static_cast<const T*>(p.xz)[static_cast<size_t>(b) * 2 * E + E + e]) : 0.f;
  const float De = live && warp == 0 ? p.D[e] : 0.f;
  const float bias = live && warp == 0 && p.dt_bias ? p.dt_bias[e] : 0.f;
  const bool norms = p.norm[0] != nullptr;
  const int i0 = threadIdx.x;
  const int g0 = i0 < R ? 0 : i0 < R + N ? 1 : 2;
  const float nw0 = norms && i0 < J ? to_f(static_cast<const T*>(p.norm[g0])[i0 - (g0 == 0 ? 0 : g0 == 1 ? R : R + N)]) : 1.f;
  // Launched early (programmatic dependent launch): everything above reads what was complete before the reduce kernel
  // started (weights, the states, u, z); xdbl is the reduce kernel's output, and every write comes after this wait.
  pdl_wait();
  pdl_trigger();
  const T* xd = static_cast<const T*>(p.xdbl) + static_cast<size_t>(b) * J;
  float sq[3] = {0.f, 0.f, 0.f};
  for (int i = threadIdx.x; i < J; i += blockDim.x) {
    const float xv = to_f(xd[i]);
    v[i] = xv;
    sq[i < R ? 0 : i < R + N ? 1 : 2] += xv * xv;
  }
  if (norms) {
#pragma unroll
    for (int g = 0; g < 3; ++g) {
      for (int o = 16; o > 0; o >>= 1) sq[g] += __shfl_down_sync(0xffffffffu, sq[g], o);
      if (lane == 0) part[warp][g] = sq[g];
    }
    __syncthreads();
    if (threadIdx.x < 3) {
      float t = 0.f;
      for (int w = 0; w < kStepWarps; ++w) t += part[w][threadIdx.x];
      inv[threadIdx.x] = rsqrtf(t / static_cast<float>(threadIdx.x == 0 ? R : N) + p.eps);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < J; i += blockDim.x) {
      const int g = i < R ? 0 : i < R + N ? 1 : 2;
      const int j = i - (g == 0 ? 0 : g == 1 ? R : R + N);
      const float w = i == i0 ? nw0 : to_f(static_cast<const T*>(p.norm[g])[j]);
      v[i] = to_f(from_f<T>(w * (v[i] * inv[g])));
    }
  }
  __syncthreads();
  float acc = 0.f;
#pragma unroll
  for (int k = 0; k < kDtRegs; ++k) {
    const int r = warp + k * kStepWarps;
    if (r < R) acc += v[r] * wr[k];
  }
  if (live)
    for (int r = warp + kDtRegs * kStepWarps; r < R; r += kStepWarps) acc += v[r] * to_f(dp[static_cast<size_t>(r) * E]);
  red[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && live) {
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < kStepWarps; ++w) t += red[w][lane];
    const float d = to_f(from_f<T>(t)) + bias;
    delta[lane] = d > 20.f ? d : log1pf(expf(d));
  }
  __syncthreads();
  float yp = 0.f;
  if (live) {
    const float d = delta[lane];
    const float dx = d * x;
    float* h1 = p.ssm_state_out + be * N;
    for (int n = warp; n < N; n += kStepWarps) {
      const float a2 = n == warp ? a_first : A[n] * 1.4426950408889634f;
      const float h = fmaf(exp2f(d * a2), n == warp ? h_first : h0[n], dx * v[R + n]);
      h1[n] = h;
      yp += v[R + N + n] * h;
    }
  }
  red[warp][lane] = yp;  // warp 0 read the dt sums before the barrier above
  __syncthreads();
  if (warp == 0 && live) {
    float y = 0.f;
#pragma unroll
    for (int w = 0; w < kStepWarps; ++w) y += red[w][lane];
    y += De * x;
    y *= zv / (1.f + expf(-zv));
    static_cast<T*>(p.y)[be] = from_f<T>(y);
  }
}

template <typename T>
__global__ void split_bc_kernel(const T* xdbl, T* Bm, T* Cm, int64_t rows, int R, int N) {
  const int64_t n = rows * 2 * N;
  const int J = R + 2 * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / (2 * N);
    const int k = static_cast<int>(i % (2 * N));
    (k < N ? Bm[r * N + k] : Cm[r * N + k - N]) = xdbl[r * J + R + k];
  }
}

template <typename T, int MAXB>
void launch_conv(const DecodeParams& p, cudaStream_t s) {
  check_cuda(launch_pdl(conv_xproj_kernel<T, MAXB>, dim3(p.chunks), dim3(kConvThreads), sizeof(float) * p.B * p.chunk, s, p),
             "conv_xproj kernel launch");
}

template <typename T>
void run_decode(const MambaMixerArgs& a, void* ws, cudaStream_t s) {
  DecodeParams p{};
  p.xz = a.xz, p.mask = a.mask, p.conv_w = a.conv_weight, p.conv_b = a.conv_bias, p.conv_state = a.conv_state;
  p.x_proj = a.x_proj, p.dt_proj = a.dt_proj;
  for (int g = 0; g < 3; ++g) p.norm[g] = a.norm[g];
  p.dt_bias = a.dt_bias, p.A = a.A, p.D = a.D, p.ssm_state = a.ssm_state;
  p.conv_state_out = a.conv_state_out, p.y = a.y, p.ssm_state_out = a.ssm_state_out;
  p.B = static_cast<int>(a.B), p.E = static_cast<int>(a.E), p.K = static_cast<int>(a.K), p.N = static_cast<int>(a.N);
  p.R = static_cast<int>(a.R), p.J = static_cast<int>(a.J()), p.eps = a.eps;
  p.chunk = conv_chunk(a.E);
  p.chunks = static_cast<int>((a.E + p.chunk - 1) / p.chunk);
  char* w = static_cast<char*>(ws);
  p.u = w;
  w += align256(static_cast<size_t>(a.B) * a.E * sizeof(T));
  p.partial = reinterpret_cast<float*>(w);
  w += align256(static_cast<size_t>(p.chunks) * a.B * p.J * sizeof(float));
  p.xdbl = w;
  if (p.B <= 1) launch_conv<T, 1>(p, s);
  else launch_conv<T, kMaxRows>(p, s);
  check_cuda(launch_pdl(reduce_kernel<T>, dim3((p.J + kReduceCols - 1) / kReduceCols, p.B), dim3(kReduceCols * kReduceGroups), 0,
                        s, p),
             "reduce kernel launch");
  check_cuda(launch_pdl(step_kernel<T>, dim3((p.E + 31) / 32, p.B), dim3(32 * kStepWarps), sizeof(float) * p.J, s, p),
             "step kernel launch");
}

}  // namespace

struct MambaMixerRunner::Impl {
  std::mutex mu;
  CublasHandle cublas;
  // Row-major y[M, N] = x[M, K]·W[K, N] (x rows ldx apart), T in and out, fp32 compute.
  void gemm(DType t, int64_t M, int64_t K, int64_t N, const void* x, int64_t ldx, const void* W, void* y,
            cudaStream_t s, const char* what) {
    std::string why;
    const Cublas* cb = load_cublas(&why);
    if (!cb) throw OpError("MambaMixer (CUDA): " + why);
    std::lock_guard<std::mutex> lock(mu);
    Cublas::Handle h = cublas.bind(*cb, s, "MambaMixer");
    // Row-major y = x·W is column-major yᵀ = Wᵀ·xᵀ with W read as column-major [N, K].
    const cudaDataType dt = t == DType::f16 ? CUDA_R_16F : CUDA_R_32F;
    const float one = 1.f, zero = 0.f;
    gemm_check(*cb,
               cb->gemm_ex(h, kCublasOpN, kCublasOpN, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one,
                           W, dt, static_cast<int>(N), x, dt, static_cast<int>(ldx), &zero, y, dt, static_cast<int>(N),
                           kCublasCompute32F, kCublasGemmDefault),
               "MambaMixer", what);
  }
};

MambaMixerRunner::MambaMixerRunner() : impl_(new Impl()) {}
MambaMixerRunner::~MambaMixerRunner() = default;

bool MambaMixerRunner::decode_path(const MambaMixerArgs& a) {
  // Above one row the step kernel reads dt_proj once per row: measured (test_cuda --mixer, H200) at 4 rows it wins
  // at dt_rank 92 (12.6 vs 18.4 µs) and loses at 256 (28.6 vs 24.4 µs), so wide dt_proj takes the chain there.
  const int64_t max_rows = a.R <= kMaxRowsDtRank ? kMaxRows : 1;
  return a.T == 1 && a.B >= 1 && a.B <= max_rows && a.J() <= kMaxJ && a.E < (int64_t(1) << 30) && a.K <= 64;
}

size_t MambaMixerRunner::workspace_bytes(const MambaMixerArgs& a, bool allow_decode) const {
  const size_t ts = dtype_size(a.dtype);
  if (allow_decode && decode_path(a)) {
    const int chunk = conv_chunk(a.E);
    const size_t chunks = static_cast<size_t>((a.E + chunk - 1) / chunk);
    return align256(static_cast<size_t>(a.B) * a.E * ts) + align256(chunks * a.B * a.J() * 4) +
           align256(static_cast<size_t>(a.B) * a.J() * ts);
  }
  const size_t S = static_cast<size_t>(a.B * a.T);
  // u, z, xdbl, dt (normed only), Bm, Cm, dt_raw
  return 2 * align256(S * a.E * ts) + align256(S * a.J() * ts) + align256(S * a.R * ts) + 2 * align256(S * a.N * ts) +
         align256(S * a.E * ts);
}

void MambaMixerRunner::run(const MambaMixerArgs& a, void* ws, size_t ws_bytes, void* stream, bool allow_decode) {
  if (a.B * a.T * std::max(a.E, a.J()) >= (int64_t(1) << 31) || a.E * std::max(a.J(), a.N) >= (int64_t(1) << 31))
    throw OpError("MambaMixer (CUDA): sizes exceed 32-bit indexing");
  if (ws_bytes < workspace_bytes(a, allow_decode)) throw OpError("MambaMixer (CUDA): workspace too small");
  auto s = static_cast<cudaStream_t>(stream);
  const bool f16 = a.dtype == DType::f16;
  if (a.B * a.T == 0) {  // the states pass through
    mamba_conv(a.conv(nullptr, nullptr), stream);
    selective_scan(a.scan(nullptr, nullptr, nullptr, nullptr, nullptr), stream);
    return;
  }
  if (allow_decode && decode_path(a)) {
    if (f16) run_decode<__half>(a, ws, s);
    else run_decode<float>(a, ws, s);
    return;
  }
  const int64_t S = a.B * a.T;
  const size_t ts = dtype_size(a.dtype);
  char* w = static_cast<char*>(ws);
  auto take = [&](size_t bytes) {
    void* p = w;
    w += align256(bytes);
    return p;
  };
  void* u = take(S * a.E * ts);
  void* z = take(S * a.E * ts);
  void* xdbl = take(S * a.J() * ts);
  void* dt = take(S * a.R * ts);
  void* Bm = take(S * a.N * ts);
  void* Cm = take(S * a.N * ts);
  void* dt_raw = take(S * a.E * ts);
  mamba_conv(a.conv(u, z), stream);
  impl_->gemm(a.dtype, S, a.E, a.J(), u, a.E, a.x_proj, xdbl, s, "x_proj");
  const void* dt_in = dt;
  int64_t ld_dt = a.R;
  if (a.norms()) {
    SplitRmsNormArgs n;
    n.rows = S, n.D = a.J(), n.G = 3, n.len[0] = a.R, n.len[1] = a.N, n.len[2] = a.N, n.eps = a.eps, n.dtype = a.dtype;
    n.x = xdbl;
    for (int g = 0; g < 3; ++g) n.w[g] = a.norm[g];
    n.y[0] = dt, n.y[1] = Bm, n.y[2] = Cm;
    split_rms_norm(n, stream);
  } else {
    dt_in = xdbl, ld_dt = a.J();  // dt_proj reads dt in place, rows J apart
    const int64_t n = S * 2 * a.N;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
    if (f16)
      split_bc_kernel<__half><<<grid, 256, 0, s>>>(static_cast<const __half*>(xdbl), static_cast<__half*>(Bm),
                                                   static_cast<__half*>(Cm), S, static_cast<int>(a.R), static_cast<int>(a.N));
    else
      split_bc_kernel<float><<<grid, 256, 0, s>>>(static_cast<const float*>(xdbl), static_cast<float*>(Bm),
                                                  static_cast<float*>(Cm), S, static_cast<int>(a.R), static_cast<int>(a.N));
    check_cuda(cudaGetLastError(), "split kernel launch");
  }
  impl_->gemm(a.dtype, S, a.R, a.E, dt_in, ld_dt, a.dt_proj, dt_raw, s, "dt_proj");
  selective_scan(a.scan(u, z, dt_raw, Bm, Cm), stream);
}

}  // namespace cuda
}  // namespace hubmoe
