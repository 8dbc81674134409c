// SplitRMSNorm: random rows at a few scales, a reference from the definition in double, and the CPU kernel's
// checks (included by test_cpu.cc; test_ort.cc and test_cuda.cu use the problems and the reference).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/split_rms_norm.h"
#include "test_util.h"

namespace testutil {

struct SplitRmsProblem {
  DType dtype = DType::f32;
  int64_t rows = 0, D = 0;
  int G = 0;
  int64_t len[hubmoe::kSplitRmsMaxGroups] = {};
  float eps = 1e-6f;
  Buf x;                                   // [rows, D]
  Buf w[hubmoe::kSplitRmsMaxGroups];       // [len_g]
  hubmoe::SplitRmsNormArgs args(void* const* y) const {
    hubmoe::SplitRmsNormArgs a;
    a.rows = rows, a.D = D, a.G = G, a.eps = eps, a.dtype = dtype, a.x = x.data();
    for (int g = 0; g < G; ++g) a.len[g] = len[g], a.w[g] = w[g].data(), a.y[g] = y[g];
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[200];
    std::snprintf(b, sizeof b, "SplitRMSNorm %s rows=%lld segments=%lld/%lld/%lld eps=%g%s", hubmoe::dtype_name(dtype),
                  (long long)rows, (long long)len[0], (long long)len[1], (long long)len[2], eps, extra);
    return b;
  }
};

// Segment g of row r is scaled by 2^(r mod 5 − 2)·(g + 1) so that rows and segments have different RMS (a kernel
// that mixed segments or rows would be caught); with epsilon > 0, one segment of the last row is all zeros (output 0, no NaN).
inline SplitRmsProblem make_split_rms(int64_t rows, std::vector<int64_t> lens, DType t, float eps, uint64_t seed) {
  Rng r(seed);
  SplitRmsProblem p;
  p.dtype = t, p.rows = rows, p.G = static_cast<int>(lens.size()), p.eps = eps;
  for (int g = 0; g < p.G; ++g) p.len[g] = lens[g], p.D += lens[g];
  std::vector<double> x = r.vec(static_cast<size_t>(rows * p.D), -2.0, 2.0);
  for (int64_t i = 0; i < rows; ++i) {
    int64_t off = 0;
    for (int g = 0; g < p.G; ++g) {
      const double s = std::ldexp(1.0, static_cast<int>(i % 5) - 2) * (g + 1);
      for (int64_t j = 0; j < p.len[g]; ++j) x[i * p.D + off + j] *= (eps > 0 && i == rows - 1 && g == p.G - 1) ? 0.0 : s;
      off += p.len[g];
    }
  }
  p.x = make_buf(x, t);
  for (int g = 0; g < p.G; ++g) p.w[g] = make_buf(r.vec(static_cast<size_t>(p.len[g]), 0.5, 1.5), t);
  return p;
}

// y_g for all rows, in double from the stored (rounded) inputs.
inline std::vector<double> split_rms_ref(const SplitRmsProblem& p, int g) {
  int64_t off = 0;
  for (int k = 0; k < g; ++k) off += p.len[k];
  std::vector<double> y(static_cast<size_t>(p.rows * p.len[g]));
  for (int64_t i = 0; i < p.rows; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < p.len[g]; ++j) ss += p.x.vals[i * p.D + off + j] * p.x.vals[i * p.D + off + j];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(p.len[g]) + p.eps);
    for (int64_t j = 0; j < p.len[g]; ++j) y[i * p.len[g] + j] = p.w[g].vals[j] * p.x.vals[i * p.D + off + j] * inv;
  }
  return y;
}

// fp32: accumulation order only; fp16: the output's rounding (2^-11 relative) and the fp16 inputs' squares summed in fp32.
inline double split_rms_tol(DType t) { return t == DType::f32 ? 2e-6 : 1.5e-3; }

struct SplitRmsShape {
  int64_t rows;
  std::vector<int64_t> lens;
  float eps;
};
// Jamba's dt/B/C (dt_rank 256 or 16 in the tiny fixtures, d_state 16) at decode and prefill sizes, odd lengths, two
// and one segments, a segment longer than the CUDA block, and no rows.
inline std::vector<SplitRmsShape> split_rms_shapes() {
  return {{1, {256, 16, 16}, 1e-6f}, {64, {256, 16, 16}, 1e-6f}, {3, {8, 4, 4}, 1e-5f}, {5, {37, 3, 11}, 1e-6f},
          {7, {300, 5}, 1e-6f},     {2, {1}, 0.f},               {4, {1000}, 1e-6f},   {0, {4, 4, 4}, 1e-6f}};
}

inline void test_split_rms_norm(Tally& t) {
  uint64_t seed = 8100;
  for (DType dt : {DType::f32, DType::f16})
    for (const SplitRmsShape& s : split_rms_shapes()) {
      SplitRmsProblem p = make_split_rms(s.rows, s.lens, dt, s.eps, seed++);
      std::vector<Buf> y;
      void* yp[hubmoe::kSplitRmsMaxGroups] = {};
      for (int g = 0; g < p.G; ++g) y.push_back(zeros(static_cast<size_t>(p.rows * p.len[g]), dt));
      for (int g = 0; g < p.G; ++g) yp[g] = y[g].data();
      hubmoe::split_rms_norm_cpu(p.args(yp));
      double err = 0;
      for (int g = 0; g < p.G; ++g) err = std::max(err, rel_err(read(yp[g], y[g].size(), dt), split_rms_ref(p, g), 1e-3));
      t.check_err(p.name(" CPU"), err, split_rms_tol(dt));
    }
  hubmoe::SplitRmsNormArgs a;
  auto throws = [&](const int64_t* xd, int xr, std::vector<std::vector<int64_t>> w, const char* needle) {
    std::vector<const int64_t*> wd;
    std::vector<int> wr;
    for (auto& v : w) wd.push_back(v.data()), wr.push_back(static_cast<int>(v.size()));
    std::string msg;
    try {
      hubmoe::split_rms_norm_check(xd, xr, static_cast<int>(w.size()), wd.data(), wr.data(), a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    t.check(msg.find(needle) != std::string::npos, std::string("SplitRMSNorm error: ") + needle, msg.empty() ? 1 : 0, 0);
  };
  const int64_t x[] = {2, 3, 24};
  throws(x, 3, {{8}, {8}, {7}}, "add up to 23, but input 'x' [2, 3, 24] has last dim 24");
  throws(x, 3, {{8, 1}, {16}}, "weight 0 must be a non-empty vector");
  throws(x, 0, {{24}}, "at least one dim");
  throws(x, 3, {}, "1 to 3 weights expected, got 0");
  throws(x, 3, {{6}, {6}, {6}, {6}}, "1 to 3 weights expected, got 4");
}

}  // namespace testutil
