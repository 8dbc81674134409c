// SparseLinear: problems, a double-precision reference, and the CPU kernel's checks (included by test_cpu.cc;
// test_cuda.cu uses the problems and the CPU kernel as its reference).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/sparse_linear.h"
#include "test_util.h"

namespace testutil {

struct SparseProblem {
  DType dtype = DType::f32;
  int64_t S = 0, K = 0, N = 0;
  float mode = 0.f, threshold = 0.f;
  Buf x, W, bias;  // bias empty: absent
  hubmoe::SparseLinearArgs args() const {
    hubmoe::SparseLinearArgs a;
    a.S = S, a.K = K, a.N = N, a.dtype = dtype, a.mode = mode, a.threshold = threshold;
    a.x = x.data(), a.W = W.data(), a.bias = bias.size() ? bias.data() : nullptr;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[200];
    std::snprintf(b, sizeof b, "SparseLinear %s S=%lld K=%lld N=%lld bias=%d mode=%.3f threshold=%.4f%s",
                  hubmoe::dtype_name(dtype), (long long)S, (long long)K, (long long)N, bias.size() ? 1 : 0, mode,
                  threshold, extra);
    return b;
  }
};

// |x − mode| computed as the kernels do (fp32), for choosing thresholds.
inline std::vector<float> sparse_shifted_abs(const SparseProblem& p) {
  std::vector<float> v(p.x.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::fabs(static_cast<float>(p.x.vals[i]) - p.mode);
  return v;
}

// A threshold between two distinct |x − mode| values near the `sparsity` quantile, so that no element sits on it.
inline float sparse_threshold_for(const SparseProblem& p, double sparsity) {
  std::vector<float> v = sparse_shifted_abs(p);
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0.f;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(sparsity * static_cast<double>(v.size())));
  while (i + 1 < v.size() && v[i + 1] == v[i]) ++i;
  if (i + 1 >= v.size()) return v.back() + 1.f;
  return 0.5f * (v[i] + v[i + 1]);
}

inline SparseProblem make_sparse(int64_t S, int64_t K, int64_t N, DType t, bool bias, double sparsity, uint64_t seed,
                                 float mode = 0.137f) {
  Rng r(seed);
  SparseProblem p;
  p.dtype = t, p.S = S, p.K = K, p.N = N, p.mode = mode;
  p.x = make_buf(r.vec(static_cast<size_t>(S * K), -1.0, 1.4), t);
  p.W = make_buf(r.vec(static_cast<size_t>(K * N), -0.5, 0.5), t);
  if (bias) p.bias = make_buf(r.vec(static_cast<size_t>(N), -1.0, 1.0), t);
  p.threshold = sparsity < 0 ? -1.f : sparse_threshold_for(p, sparsity);
  return p;
}

namespace sparse_ref {
// y = x_s · W + bias in double, x_s pruned and rounded to the problem's type as the op specifies.
inline std::vector<double> sparse_linear(const SparseProblem& p, double* kept_fraction = nullptr) {
  std::vector<double> y(static_cast<size_t>(p.S * p.N), 0.0);
  size_t kept = 0;
  for (int64_t s = 0; s < p.S; ++s) {
    for (int64_t k = 0; k < p.K; ++k) {
      const float d = static_cast<float>(p.x.vals[s * p.K + k]) - p.mode;
      if (!(std::fabs(d) > p.threshold)) continue;
      ++kept;
      const double v = p.dtype == DType::f32 ? d : hubmoe::half_to_float(hubmoe::float_to_half(d));
      for (int64_t n = 0; n < p.N; ++n) y[s * p.N + n] += v * p.W.vals[k * p.N + n];
    }
    if (p.bias.size())
      for (int64_t n = 0; n < p.N; ++n) y[s * p.N + n] += p.bias.vals[n];
  }
  if (kept_fraction) *kept_fraction = (p.S * p.K) != 0 ? static_cast<double>(kept) / static_cast<double>(p.S * p.K) : 0;
  return y;
}
}  // namespace sparse_ref

inline std::vector<uint8_t> run_sparse_cpu(const SparseProblem& p, const hubmoe::Parallel& par) {
  std::vector<uint8_t> y(static_cast<size_t>(p.S * p.N) * hubmoe::dtype_size(p.dtype));
  hubmoe::SparseLinearArgs a = p.args();
  a.y = y.data();
  hubmoe::sparse_linear_cpu(a, par);
  return y;
}

inline void test_sparse_linear(Tally& t, const hubmoe::Parallel& par, double tol32, double tol16) {
  uint64_t seed = 500;
  for (DType dt : {DType::f32, DType::f16})
    for (int64_t S : {1, 3, 9})
      for (int64_t K : {37, 600})
        for (int64_t N : {5, 300})
          for (bool bias : {false, true})
            for (double sp : {0.5, 0.0, -1.0, 0.9}) {
              if (sp != 0.5 && (K != 600 || N != 300)) continue;
              SparseProblem p = make_sparse(S, K, N, dt, bias, sp, seed++);
              double kept = 0;
              const std::vector<double> want = sparse_ref::sparse_linear(p, &kept);
              const std::vector<uint8_t> got = run_sparse_cpu(p, par);
              char extra[64];
              std::snprintf(extra, sizeof extra, " kept=%.2f", kept);
              t.check_err(p.name(extra), rel_err(read(got.data(), want.size(), dt), want, 1.0),
                          dt == DType::f32 ? tol32 : tol16);
              if (sp == 0.5) t.check(std::fabs(kept - 0.5) < 0.05, p.name(" kept fraction near 0.5"), kept, 0.5);
            }
  // Everything pruned: y = bias exactly.
  for (DType dt : {DType::f32, DType::f16}) {
    SparseProblem p = make_sparse(2, 64, 40, dt, true, 0.5, 77);
    p.threshold = 1e9f;
    const std::vector<uint8_t> got = run_sparse_cpu(p, par);
    bool same = true;
    const size_t es = hubmoe::dtype_size(dt);
    for (int64_t s = 0; s < p.S; ++s) same = same && std::memcmp(got.data() + s * p.N * es, p.bias.bytes.data(), p.N * es) == 0;
    t.check(same, p.name(" all pruned = bias"), same ? 0 : 1, 0);
  }
  // K = 0: y = bias (or zeros).
  {
    SparseProblem p = make_sparse(3, 0, 7, DType::f32, true, -1.0, 78);
    const std::vector<double> got = read(run_sparse_cpu(p, par).data(), 21, DType::f32);
    double err = 0;
    for (int64_t i = 0; i < 21; ++i) err = std::max(err, std::fabs(got[i] - p.bias.vals[i % 7]));
    t.check(err == 0, p.name(" K=0"), err, 0);
  }
}

inline void test_sparse_linear_errors(Tally& t) {
  auto expect_error = [&](const char* what, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                          const std::vector<int64_t>* b, const char* needle) {
    hubmoe::SparseLinearArgs a;
    std::string msg;
    try {
      hubmoe::sparse_linear_check(x.data(), static_cast<int>(x.size()), w.data(), static_cast<int>(w.size()),
                                  b ? b->data() : nullptr, b ? static_cast<int>(b->size()) : -1, a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    const bool ok = msg.find(needle) != std::string::npos && msg.rfind("SparseLinear", 0) == 0;
    if (!ok) std::printf("  %s: got \"%s\"\n", what, msg.c_str());
    t.check(ok, std::string("SparseLinear error: ") + what, ok ? 0 : 1, 0);
  };
  const std::vector<int64_t> bias_bad{7};
  expect_error("W rank", {2, 8}, {8, 4, 1}, nullptr, "input 'W' must be [K, N]");
  expect_error("K mismatch", {2, 3, 8}, {9, 4}, nullptr, "input 'W' has shape [9, 4], expected [8, N]");
  expect_error("bias shape", {2, 8}, {8, 4}, &bias_bad, "input 'bias' has shape [7], expected [4]");
  expect_error("scalar x", {}, {8, 4}, nullptr, "input 'x' must be [..., K]");
  hubmoe::SparseLinearArgs a;
  const std::vector<int64_t> x{2, 3, 8}, w{8, 5};
  hubmoe::sparse_linear_check(x.data(), 3, w.data(), 2, nullptr, -1, a);
  t.check(a.S == 6 && a.K == 8 && a.N == 5, "SparseLinear shapes: S is the product of x's leading dims", 0, 0);
}

}  // namespace testutil
