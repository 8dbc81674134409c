// The CPU SkipRMSNorm: rows in parallel, each in the order skip_rms_norm.h fixes, so that the bytes match the CUDA
// kernel's. Built with -ffp-contract=off (Makefile): a product fused into the next add would change the sums.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "skip_rms_norm.h"

namespace hubmoe {

void skip_rms_norm_check(const int64_t* x, int xr, const int64_t* skip, int sr, const int64_t* w, int wr, bool sum,
                         SkipRmsNormArgs& a) {
  if (xr < 1) throw OpError("SkipRMSNorm: input 'x' must be [..., D], got a scalar");
  if (sum && sr < 0) throw OpError("SkipRMSNorm: output 'sum' (x + skip) is requested, but input 'skip' is absent");
  if (sr >= 0 && (sr != xr || !std::equal(x, x + xr, skip)))
    throw OpError("SkipRMSNorm: input 'skip' has shape " + dims_str(skip, sr) + ", expected the shape of 'x', " +
                  dims_str(x, xr));
  const int64_t D = x[xr - 1];
  if (wr != 1 || w[0] != D)
    throw OpError("SkipRMSNorm: input 'weight' has shape " + dims_str(w, wr) + ", expected [" + std::to_string(D) +
                  "] (the last dim of 'x', " + dims_str(x, xr) + ")");
  int64_t rows = 1;
  for (int i = 0; i + 1 < xr; ++i) rows *= x[i];
  a.rows = rows;
  a.D = D;
}

namespace {

// Row r. s holds the row's s = round_T(x + skip) as fp32 (exact: it is a T value); lane the 256 lane sums.
template <typename T>
void row(const SkipRmsNormArgs& a, int64_t r, float* s, float* lane) {
  const int64_t D = a.D;
  constexpr int64_t G = 16 / static_cast<int64_t>(sizeof(T));  // elements per 16-byte group
  const T* x = static_cast<const T*>(a.x) + r * D;
  const T* skip = a.skip ? static_cast<const T*>(a.skip) + r * D : nullptr;
  const T* w = static_cast<const T*>(a.w);
  T* y = static_cast<T*>(a.y) + r * D;
  if (skip) {
    for (int64_t i = 0; i < D; ++i) s[i] = to_float(from_float<T>(to_float(x[i]) + to_float(skip[i])));
  } else {
    for (int64_t i = 0; i < D; ++i) s[i] = to_float(x[i]);
  }
  if (a.sum) {
    T* sum = static_cast<T*>(a.sum) + r * D;
    for (int64_t i = 0; i < D; ++i) sum[i] = from_float<T>(s[i]);
  }
  std::fill(lane, lane + kSkipRmsLanes, 0.f);
  for (int64_t g = 0, i = 0; i < D; ++g) {
    float q = 0.f;
    for (const int64_t end = std::min(D, i + G); i < end; ++i) q += s[i] * s[i];
    lane[g % kSkipRmsLanes] += q;
  }
  for (int h = kSkipRmsLanes / 2; h >= 1; h /= 2)
    for (int i = 0; i < h; ++i) lane[i] += lane[i + h];
  const float inv = 1.f / std::sqrt(lane[0] / static_cast<float>(D) + a.eps);
  for (int64_t i = 0; i < D; ++i) y[i] = from_float<T>(to_float(w[i]) * to_float(from_float<T>(s[i] * inv)));
}

template <typename T>
void impl(const SkipRmsNormArgs& a, const Parallel& par) {
  const size_t grain = static_cast<size_t>(std::max<int64_t>(1, 16384 / a.D));  // about 16k elements per task
  par.for_range(static_cast<size_t>(a.rows), grain, [&](size_t begin, size_t end) {
    std::vector<float> s(static_cast<size_t>(a.D)), lane(kSkipRmsLanes);
    for (size_t r = begin; r < end; ++r) row<T>(a, static_cast<int64_t>(r), s.data(), lane.data());
  });
}

}  // namespace

void skip_rms_norm_cpu(const SkipRmsNormArgs& a, const Parallel& par) {
  if (a.rows == 0 || a.D == 0) return;
  if (a.dtype == DType::f16) impl<half_t>(a, par);
  else impl<float>(a, par);
}

}  // namespace hubmoe
