#include <string>
#include <vector>

#include "linear.h"
#include "linear_cpu.h"

namespace hubmoe {

namespace {

template <typename T>
void linear_impl(const LinearArgs& a, const Parallel& par) {
  const int64_t S = a.S, K = a.K, N = a.N;
  std::vector<float> xf(static_cast<size_t>(S * K)), yf(static_cast<size_t>(S * N));
  load_row(static_cast<const T*>(a.x), S * K, xf.data());
  linear_output_major<T>(xf.data(), S, K, static_cast<const T*>(a.W), static_cast<const T*>(a.bias), N, yf.data(), par);
  T* y = static_cast<T*>(a.y);
  for (int64_t i = 0; i < S * N; ++i) y[i] = from_float<T>(yf[i]);
}

}  // namespace

void linear_check(const int64_t* x, int xr, const int64_t* w, int wr, const int64_t* b, int br, LinearArgs& a) {
  if (xr < 1) throw OpError("Linear: input 'x' must be [..., K], got a scalar");
  if (wr != 2) throw OpError("Linear: input 'W' must be [N, K], got " + dims_str(w, wr));
  const int64_t K = x[xr - 1];
  if (w[1] != K)
    throw OpError("Linear: input 'W' has shape " + dims_str(w, wr) + ", expected [N, " + std::to_string(K) +
                  "] for 'x' of shape " + dims_str(x, xr));
  const int64_t N = w[0];
  if (br >= 0 && !(br == 1 && b[0] == N))
    throw OpError("Linear: input 'bias' has shape " + dims_str(b, br) + ", expected [" + std::to_string(N) + "]");
  int64_t S = 1;
  for (int i = 0; i + 1 < xr; ++i) S *= x[i];
  a.S = S;
  a.K = K;
  a.N = N;
}

void linear_cpu(const LinearArgs& a, const Parallel& par) {
  if (a.S == 0 || a.N == 0) return;
  if (a.dtype == DType::f32)
    linear_impl<float>(a, par);
  else
    linear_impl<half_t>(a, par);
}

}  // namespace hubmoe
