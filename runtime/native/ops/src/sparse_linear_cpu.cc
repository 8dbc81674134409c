#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "linear_cpu.h"
#include "sparse_linear.h"

namespace hubmoe {

namespace {

// Prunes every token's input into fp32 (kept values rounded to T), then the input-major linear layer, which skips
// the weight rows no token of a tile keeps.
template <typename T>
void sparse_linear_impl(const SparseLinearArgs& a, const Parallel& par) {
  const int64_t S = a.S, K = a.K, N = a.N;
  const T* x = static_cast<const T*>(a.x);
  std::vector<float> xs(static_cast<size_t>(S * K));
  for (int64_t i = 0; i < S * K; ++i) {
    const float v = to_float(x[i]) - a.mode;
    xs[i] = std::fabs(v) > a.threshold ? to_float(from_float<T>(v)) : 0.f;
  }
  std::vector<float> y(static_cast<size_t>(S * N));
  linear_input_major<T>(xs.data(), S, K, static_cast<const T*>(a.W), static_cast<const T*>(a.bias), N, y.data(), par);
  T* out = static_cast<T*>(a.y);
  for (int64_t i = 0; i < S * N; ++i) out[i] = from_float<T>(y[i]);
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
