#include <cmath>
#include <string>
#include <vector>

#include "mamba_conv.h"

namespace hubmoe {

void mamba_conv_check(const int64_t* xz, int xr, const int64_t* m, int mr, const int64_t* w, int wr, const int64_t* b,
                      int br, const int64_t* st, int sr, MambaConvArgs& a) {
  if (xr != 3 || xz[2] % 2 != 0)
    throw OpError("MambaConv: input 'xz' must be [batch, sequence, 2·channels], got " + dims_str(xz, xr));
  const int64_t B = xz[0], T = xz[1], E = xz[2] / 2;
  if (wr != 3 || w[0] != E || w[1] != 1 || w[2] < 1)
    throw OpError("MambaConv: input 'weight' must be [" + std::to_string(E) + ", 1, kernel], got " + dims_str(w, wr));
  const int64_t K = w[2];
  if (mr != 3 || m[0] != B || m[1] != T || m[2] != 1)
    throw OpError("MambaConv: input 'mask' must be [" + std::to_string(B) + ", " + std::to_string(T) + ", 1], got " + dims_str(m, mr));
  if (br >= 0 && (br != 1 || b[0] != E))
    throw OpError("MambaConv: input 'bias' must be [" + std::to_string(E) + "], got " + dims_str(b, br));
  if (sr != 3 || st[0] != B || st[1] != E || st[2] != K - 1)
    throw OpError("MambaConv: input 'state' must be [" + std::to_string(B) + ", " + std::to_string(E) + ", " + std::to_string(K - 1) +
                  "], got " + dims_str(st, sr));
  a.B = B, a.T = T, a.E = E, a.K = K;
}

namespace {

template <typename T>
void impl(const MambaConvArgs& a) {
  const T* xz = static_cast<const T*>(a.xz);
  const T* mask = static_cast<const T*>(a.mask);
  const T* w = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  const T* state = static_cast<const T*>(a.state);
  T* u = static_cast<T*>(a.u);
  T* z = static_cast<T*>(a.z);
  T* state_out = static_cast<T*>(a.state_out);
  const int64_t E = a.E, K = a.K, T_ = a.T;
  std::vector<float> s(static_cast<size_t>(K - 1 + T_));
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t j = 0; j < K - 1; ++j) s[j] = to_float(state[(b * E + e) * (K - 1) + j]);
      for (int64_t t = 0; t < T_; ++t) {
        const size_t row = static_cast<size_t>(b * T_ + t);
        // mask · x rounded to T, as the portable graph's Mul in T computes it
        s[K - 1 + t] = to_float(from_float<T>(to_float(mask[row]) * to_float(xz[row * 2 * E + e])));
      }
      const float bb = bias ? to_float(bias[e]) : 0.f;
      for (int64_t t = 0; t < T_; ++t) {
        const size_t row = static_cast<size_t>(b * T_ + t);
        float acc = bb;
        for (int64_t k = 0; k < K; ++k) acc += to_float(w[e * K + k]) * s[t + k];
        const float act = acc / (1.f + std::exp(-acc));
        u[row * E + e] = from_float<T>(to_float(mask[row]) * act);
        z[row * E + e] = xz[row * 2 * E + E + e];
      }
      for (int64_t j = 0; j < K - 1; ++j) state_out[(b * E + e) * (K - 1) + j] = from_float<T>(s[T_ + j]);
    }
}

}  // namespace

void mamba_conv_cpu(const MambaConvArgs& a) {
  if (a.dtype == DType::f16) impl<half_t>(a);
  else impl<float>(a);
}

}  // namespace hubmoe
