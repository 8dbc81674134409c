#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sparse_linear.h"

namespace hubmoe {

namespace {

std::string dims_str(const int64_t* d, int r) {
  std::string s = "[";
  for (int i = 0; i < r; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

template <typename T>
inline float round_t(float v) {
  return to_float(from_float<T>(v));
}

// Column tiles of kCols outputs, token groups of kTok: for each group, the union of the rows its tokens keep is
// walked once, so a weight row slice is converted and read once per group.
constexpr int64_t kCols = 256;
constexpr int64_t kTok = 4;

template <typename T>
void sparse_linear_impl(const SparseLinearArgs& a, const Parallel& par) {
  const int64_t S = a.S, K = a.K, N = a.N;
  const T* x = static_cast<const T*>(a.x);
  const T* W = static_cast<const T*>(a.W);
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  // Pruned inputs in fp32 (already rounded to T) and, per token group, the rows any of its tokens keeps.
  std::vector<float> xs(static_cast<size_t>(S * K));
  const int64_t groups = (S + kTok - 1) / kTok;
  std::vector<int64_t> rows_off(static_cast<size_t>(groups + 1), 0);
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(std::min<int64_t>(S, kTok) * K));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t s0 = g * kTok, s1 = std::min(S, s0 + kTok);
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t k = 0; k < K; ++k) {
        const float v = to_float(x[s * K + k]) - a.mode;
        xs[s * K + k] = std::fabs(v) > a.threshold ? round_t<T>(v) : 0.f;
      }
    for (int64_t k = 0; k < K; ++k) {
      bool any = false;
      for (int64_t s = s0; s < s1; ++s) any = any || xs[s * K + k] != 0.f;
      if (any) rows.push_back(k);
    }
    rows_off[g + 1] = static_cast<int64_t>(rows.size());
  }
  const size_t tiles = static_cast<size_t>((N + kCols - 1) / kCols);
  par.for_range(tiles, 1, [&](size_t t0, size_t t1) {
    float acc[kTok][kCols];
    float w[kCols];
    for (size_t t = t0; t < t1; ++t) {
      const int64_t c0 = static_cast<int64_t>(t) * kCols, nc = std::min(kCols, N - c0);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t s0 = g * kTok, ns = std::min(S, s0 + kTok) - s0;
        for (int64_t s = 0; s < ns; ++s)
          for (int64_t c = 0; c < nc; ++c) acc[s][c] = 0.f;
        for (int64_t i = rows_off[g]; i < rows_off[g + 1]; ++i) {
          const int64_t k = rows[i];
          const T* wr = W + k * N + c0;
          for (int64_t c = 0; c < nc; ++c) w[c] = to_float(wr[c]);
          for (int64_t s = 0; s < ns; ++s) {
            const float v = xs[(s0 + s) * K + k];
            if (v == 0.f) continue;
            float* ac = acc[s];
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) ac[c] += v * w[c];
          }
        }
        for (int64_t s = 0; s < ns; ++s)
          for (int64_t c = 0; c < nc; ++c)
            y[(s0 + s) * N + c0 + c] = from_float<T>(acc[s][c] + (bias ? to_float(bias[c0 + c]) : 0.f));
      }
    }
  });
}

}  // namespace

void sparse_linear_check(const int64_t* x, int xr, const int64_t* w, int wr, const int64_t* b, int br,
                         SparseLinearArgs& a) {
  if (xr < 1) throw OpError("SparseLinear: input 'x' must be [..., K], got a scalar");
  if (wr != 2) throw OpError("SparseLinear: input 'W' must be [K, N], got " + dims_str(w, wr));
  const int64_t K = x[xr - 1];
  if (w[0] != K)
    throw OpError("SparseLinear: input 'W' has shape " + dims_str(w, wr) + ", expected [" + std::to_string(K) +
                  ", N] for 'x' of shape " + dims_str(x, xr));
  const int64_t N = w[1];
  if (br >= 0 && !(br == 1 && b[0] == N))
    throw OpError("SparseLinear: input 'bias' has shape " + dims_str(b, br) + ", expected [" + std::to_string(N) + "]");
  int64_t S = 1;
  for (int i = 0; i + 1 < xr; ++i) S *= x[i];
  a.S = S;
  a.K = K;
  a.N = N;
}

void sparse_linear_cpu(const SparseLinearArgs& a, const Parallel& par) {
  if (a.S == 0 || a.N == 0) return;
  if (a.dtype == DType::f32)
    sparse_linear_impl<float>(a, par);
  else
    sparse_linear_impl<half_t>(a, par);
}

}  // namespace hubmoe
