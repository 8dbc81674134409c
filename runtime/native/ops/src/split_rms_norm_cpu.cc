#include <cmath>
#include <string>

#include "split_rms_norm.h"

namespace hubmoe {

void split_rms_norm_check(const int64_t* xd, int xrank, int G, const int64_t* const* wd, const int* wrank,
                          SplitRmsNormArgs& a) {
  if (xrank < 1) throw OpError("SplitRMSNorm: input 'x' must have at least one dim, got a scalar");
  if (G < 1 || G > kSplitRmsMaxGroups)
    throw OpError("SplitRMSNorm: 1 to " + std::to_string(kSplitRmsMaxGroups) + " weights expected, got " + std::to_string(G));
  int64_t total = 0;
  for (int g = 0; g < G; ++g) {
    if (wrank[g] != 1 || wd[g][0] < 1)
      throw OpError("SplitRMSNorm: weight " + std::to_string(g) + " must be a non-empty vector, got " + dims_str(wd[g], wrank[g]));
    a.len[g] = wd[g][0];
    total += wd[g][0];
  }
  const int64_t D = xd[xrank - 1];
  if (total != D)
    throw OpError("SplitRMSNorm: the weights' lengths add up to " + std::to_string(total) + ", but input 'x' " +
                  dims_str(xd, xrank) + " has last dim " + std::to_string(D));
  int64_t rows = 1;
  for (int i = 0; i + 1 < xrank; ++i) rows *= xd[i];
  a.rows = rows, a.D = D, a.G = G;
}

namespace {

template <typename T>
void impl(const SplitRmsNormArgs& a) {
  const T* x = static_cast<const T*>(a.x);
  for (int64_t r = 0; r < a.rows; ++r) {
    int64_t off = 0;
    for (int g = 0; g < a.G; ++g) {
      const T* xs = x + r * a.D + off;
      const T* w = static_cast<const T*>(a.w[g]);
      T* y = static_cast<T*>(a.y[g]) + r * a.len[g];
      float ss = 0.f;
      for (int64_t i = 0; i < a.len[g]; ++i) {
        const float v = to_float(xs[i]);
        ss += v * v;
      }
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(a.len[g]) + a.eps);
      for (int64_t i = 0; i < a.len[g]; ++i) y[i] = from_float<T>(to_float(w[i]) * (to_float(xs[i]) * inv));
      off += a.len[g];
    }
  }
}

}  // namespace

void split_rms_norm_cpu(const SplitRmsNormArgs& a) {
  if (a.dtype == DType::f16) impl<half_t>(a);
  else impl<float>(a);
}

}  // namespace hubmoe
