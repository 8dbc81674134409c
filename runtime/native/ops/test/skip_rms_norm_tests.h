// SkipRMSNorm: random rows at a few scales, a reference from the definition in double, and the CPU kernel's checks
// (included by test_cpu.cc; test_ort.cc and test_cuda.cu use the problems and the reference).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/skip_rms_norm.h"
#include "test_util.h"

namespace testutil {

struct SkipRmsProblem {
  DType dtype = DType::f32;
  int64_t rows = 0, D = 0;
  bool has_skip = false;
  float eps = 1e-6f;
  Buf x, skip, w;  // [rows, D], [rows, D], [D]
  hubmoe::SkipRmsNormArgs args(void* y, void* sum) const {
    hubmoe::SkipRmsNormArgs a;
    a.rows = rows, a.D = D, a.eps = eps, a.dtype = dtype;
    a.x = x.data(), a.skip = has_skip ? skip.data() : nullptr, a.w = w.data(), a.y = y, a.sum = sum;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[200];
    std::snprintf(b, sizeof b, "SkipRMSNorm %s rows=%lld D=%lld skip=%d eps=%g%s", hubmoe::dtype_name(dtype), (long long)rows,
                  (long long)D, has_skip, eps, extra);
    return b;
  }
};

// x in [−2, 2] and skip in [−1, 1], row r scaled by 2^(r mod 5 − 2) (rows of different RMS: a kernel mixing rows is
// caught); with epsilon > 0 the last row sums to exactly 0 (output 0, no NaN). `dyadic`: x and skip are multiples of
// 1/16 (so s is, and every sum of s² is exact in fp32 whatever its order, for D < 4096).
inline SkipRmsProblem make_skip_rms(int64_t rows, int64_t D, DType t, bool skip, float eps, uint64_t seed, bool dyadic = false) {
  Rng r(seed);
  SkipRmsProblem p;
  p.dtype = t, p.rows = rows, p.D = D, p.has_skip = skip, p.eps = eps;
  std::vector<double> x = r.vec(static_cast<size_t>(rows * D), -2.0, 2.0), k = r.vec(static_cast<size_t>(rows * D), -1.0, 1.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < D; ++j) {
      double& a = x[i * D + j];
      double& b = k[i * D + j];
      if (dyadic) {
        a = std::round(a * 16) / 16, b = std::round(b * 16) / 16;
      } else {
        const double s = std::ldexp(1.0, static_cast<int>(i % 5) - 2);
        a *= s, b *= s;
      }
      if (eps > 0 && i == rows - 1) a = skip ? -b : 0.0;
    }
  p.x = make_buf(x, t);
  p.skip = make_buf(k, t);
  p.w = make_buf(r.vec(static_cast<size_t>(D), 0.5, 1.5), t);
  return p;
}

// s = round_T(x + skip): exactly what the kernels must write to 'sum'.
inline std::vector<double> skip_rms_sum_ref(const SkipRmsProblem& p) {
  std::vector<double> s(p.x.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = p.has_skip ? round_to(p.x.vals[i] + p.skip.vals[i], p.dtype) : p.x.vals[i];
  return s;
}

// y = w · round_T(s · inv) with the statistics in double (the last rounding to T left out).
inline std::vector<double> skip_rms_ref(const SkipRmsProblem& p) {
  const std::vector<double> s = skip_rms_sum_ref(p);
  std::vector<double> y(s.size());
  for (int64_t r = 0; r < p.rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < p.D; ++j) ss += s[r * p.D + j] * s[r * p.D + j];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(p.D) + p.eps);
    for (int64_t j = 0; j < p.D; ++j) y[r * p.D + j] = p.w.vals[j] * round_to(s[r * p.D + j] * inv, p.dtype);
  }
  return y;
}

// fp32: the statistics' fp32 rounding; fp16: y's rounding plus, rarely, round_T(s · inv) falling on the other side of
// a rounding boundary than in double (one ulp of that, times the weight).
inline double skip_rms_tol(DType t) { return t == DType::f32 ? 2e-6 : 1.5e-3; }

struct SkipRmsShape {
  int64_t rows, D;
  float eps;
};
// One element, odd D (the element path of the CUDA kernel), D a multiple of the 16-byte group, rows up to 300, Jamba's
// and BlackMamba's hidden sizes (4096, 2560) at decode and prefill-like row counts, D = 5000 (not a multiple of 8 in
// fp16 groups), epsilon 0, and no rows.
inline std::vector<SkipRmsShape> skip_rms_shapes() {
  return {{1, 1, 1e-6f},    {3, 7, 1e-5f},     {5, 8, 1e-6f},   {2, 64, 1e-6f},   {300, 24, 1e-6f}, {1, 4096, 1e-6f},
          {16, 4096, 1e-6f}, {3, 2560, 1e-5f}, {7, 5000, 1e-6f}, {300, 257, 1e-6f}, {4, 33, 0.f},    {0, 16, 1e-6f}};
}

// The kernel's y and sum for p (sum when p has skip).
struct SkipRmsOut {
  Buf y, sum;
};
inline SkipRmsOut run_skip_rms_cpu(const SkipRmsProblem& p, const hubmoe::Parallel& par, bool with_sum) {
  SkipRmsOut o{zeros(static_cast<size_t>(p.rows * p.D), p.dtype), zeros(static_cast<size_t>(p.rows * p.D), p.dtype)};
  hubmoe::skip_rms_norm_cpu(p.args(o.y.data(), with_sum ? o.sum.data() : nullptr), par);
  return o;
}

inline void test_skip_rms_norm(Tally& t, const hubmoe::Parallel& serial, const hubmoe::Parallel& threads) {
  uint64_t seed = 8700;
  for (DType dt : {DType::f32, DType::f16})
    for (const SkipRmsShape& s : skip_rms_shapes())
      for (int mode = 0; mode < 3; ++mode) {  // 0: no skip; 1: skip, y only; 2: skip and sum
        const SkipRmsProblem p = make_skip_rms(s.rows, s.D, dt, mode > 0, s.eps, seed++);
        const SkipRmsOut o = run_skip_rms_cpu(p, serial, mode == 2);
        const size_t n = static_cast<size_t>(p.rows * p.D);
        const std::string what = p.name(mode == 2 ? " sum" : "");
        t.check_err(what + " CPU y", rel_err(read(o.y.data(), n, dt), skip_rms_ref(p), 1e-3), skip_rms_tol(dt));
        if (mode == 2) {
          const bool same = read(o.sum.data(), n, dt) == skip_rms_sum_ref(p);
          t.check(same, what + " CPU sum = round_T(x + skip) exactly", !same, 0);
        }
        const SkipRmsOut o4 = run_skip_rms_cpu(p, threads, mode == 2);
        const bool same = o4.y.bytes == o.y.bytes && o4.sum.bytes == o.sum.bytes;
        t.check(same, what + " CPU 4 threads: the serial bytes", !same, 0);
      }
  // Where every sum of squares is exact (dyadic inputs), the definition fixes every bit: y must be it, and in fp16 it
  // must differ from one rounding of w · s · inv (ONNX Runtime's SkipSimplifiedLayerNormalization) somewhere.
  for (DType dt : {DType::f32, DType::f16})
    for (bool skip : {false, true}) {
      const SkipRmsProblem p = make_skip_rms(4, 1000, dt, skip, 1e-6f, 8790 + skip, true);
      const SkipRmsOut o = run_skip_rms_cpu(p, serial, false);
      const std::vector<double> got = read(o.y.data(), o.y.size(), dt), s = skip_rms_sum_ref(p);
      int wrong = 0, single_differs = 0;
      for (int64_t r = 0; r < p.rows; ++r) {
        double total = 0;  // exact
        for (int64_t j = 0; j < p.D; ++j) total += s[r * p.D + j] * s[r * p.D + j];
        const float inv = 1.f / std::sqrt(static_cast<float>(total) / static_cast<float>(p.D) + p.eps);
        for (int64_t j = 0; j < p.D; ++j) {
          const float sv = static_cast<float>(s[r * p.D + j]), wv = static_cast<float>(p.w.vals[j]);
          const double want = round_to(wv * static_cast<float>(round_to(sv * inv, dt)), dt);
          wrong += got[r * p.D + j] != want;
          single_differs += round_to(wv * (sv * inv), dt) != want;
        }
      }
      t.check(wrong == 0, p.name(" dyadic: y is the definition's bit for bit"), wrong, 0);
      if (dt == DType::f16) t.check(single_differs > 0, p.name(" dyadic: two roundings differ from one somewhere"), 1, 0);
    }
  hubmoe::SkipRmsNormArgs a;
  auto throws = [&](const std::vector<int64_t>& x, const std::vector<int64_t>* skip, const std::vector<int64_t>& w, bool sum,
                    const char* needle) {
    std::string msg;
    try {
      hubmoe::skip_rms_norm_check(x.data(), static_cast<int>(x.size()), skip ? skip->data() : nullptr,
                                  skip ? static_cast<int>(skip->size()) : -1, w.data(), static_cast<int>(w.size()), sum, a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    const bool ok = msg.find(needle) != std::string::npos;
    if (!ok) std::printf("SkipRMSNorm error: got '%s', expected it to contain '%s'\n", msg.c_str(), needle);
    t.check(ok, std::string("SkipRMSNorm error: ") + needle, !ok, 0);
  };
  const std::vector<int64_t> x = {2, 3, 24}, other = {2, 4, 24}, flat = {6, 24};
  throws(x, &other, {24}, true, "input 'skip' has shape [2, 4, 24], expected the shape of 'x', [2, 3, 24]");
  throws(x, &flat, {24}, false, "input 'skip' has shape [6, 24], expected the shape of 'x', [2, 3, 24]");
  throws(x, &x, {23}, true, "input 'weight' has shape [23], expected [24] (the last dim of 'x', [2, 3, 24])");
  throws(x, nullptr, {1, 24}, false, "input 'weight' has shape [1, 24], expected [24]");
  throws(x, nullptr, {24}, true, "output 'sum' (x + skip) is requested, but input 'skip' is absent");
  throws({}, nullptr, {24}, false, "input 'x' must be [..., D], got a scalar");
  hubmoe::skip_rms_norm_check(x.data(), 3, x.data(), 3, x.data() + 2, 1, true, a);
  t.check(a.rows == 6 && a.D == 24, "SkipRMSNorm x [2, 3, 24]: 6 rows of 24", 1, 0);
}

}  // namespace testutil
