// Linear: random problems, a reference from the definition in double, and the CPU kernel's checks (included by
// test_cpu.cc; test_ort.cc and test_cuda.cu use the problems and the reference).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "../src/linear.h"
#include "test_util.h"

namespace testutil {

struct LinearProblem {
  DType dtype = DType::f32;
  int64_t S = 0, K = 0, N = 0;
  bool has_bias = false;
  Buf x, W, bias;  // [S, K], [N, K], [N]
  hubmoe::LinearArgs args(void* y) const {
    hubmoe::LinearArgs a;
    a.S = S, a.K = K, a.N = N, a.dtype = dtype;
    a.x = x.data(), a.W = W.data(), a.bias = has_bias ? bias.data() : nullptr, a.y = y;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[200];
    std::snprintf(b, sizeof b, "Linear %s S=%lld K=%lld N=%lld bias=%d%s", hubmoe::dtype_name(dtype), (long long)S,
                  (long long)K, (long long)N, has_bias, extra);
    return b;
  }
};

inline LinearProblem make_linear(int64_t S, int64_t K, int64_t N, DType t, bool bias, uint64_t seed) {
  Rng r(seed);
  LinearProblem p;
  p.dtype = t, p.S = S, p.K = K, p.N = N, p.has_bias = bias;
  const double s = 2.0 / std::sqrt(static_cast<double>(K));
  p.x = make_buf(r.vec(static_cast<size_t>(S * K), -1, 1), t);
  p.W = make_buf(r.vec(static_cast<size_t>(N * K), -s, s), t);
  p.bias = make_buf(r.vec(static_cast<size_t>(N), -0.5, 0.5), t);
  return p;
}

// y[s, n] = Σ_k x[s, k]·W[n, k] + bias[n], in double.
inline std::vector<double> linear_ref(const LinearProblem& p) {
  std::vector<double> y(static_cast<size_t>(p.S * p.N));
  for (int64_t s = 0; s < p.S; ++s)
    for (int64_t n = 0; n < p.N; ++n) {
      double acc = p.has_bias ? p.bias.vals[n] : 0.0;
      for (int64_t k = 0; k < p.K; ++k) acc += p.x.vals[s * p.K + k] * p.W.vals[n * p.K + k];
      y[s * p.N + n] = acc;
    }
  return y;
}

struct LinearShape {
  int64_t S, K, N;
};
// One and two tokens (the CUDA gemv path), more (gemm), odd K (the scalar loads), N not a multiple of the GEMV's 16
// rows per block.
inline std::vector<LinearShape> linear_shapes() { return {{1, 64, 48}, {2, 50, 37}, {3, 128, 96}, {40, 96, 130}, {1, 1000, 300}}; }

inline void test_linear(Tally& t, const hubmoe::Parallel& par, double tol32, double tol16) {
  uint64_t seed = 9100;
  for (DType dt : {DType::f32, DType::f16})
    for (const LinearShape& s : linear_shapes())
      for (bool bias : {false, true}) {
        LinearProblem p = make_linear(s.S, s.K, s.N, dt, bias, seed++);
        Buf y = zeros(static_cast<size_t>(s.S * s.N), dt);
        hubmoe::linear_cpu(p.args(y.data()), par);
        t.check_err(p.name(" CPU"), rel_err(read(y.data(), y.size(), dt), linear_ref(p)), dt == DType::f32 ? tol32 : tol16);
      }
  auto message = [](const int64_t* x, int xr, const int64_t* w, int wr, const int64_t* b, int br) {
    hubmoe::LinearArgs a;
    try {
      hubmoe::linear_check(x, xr, w, wr, b, br, a);
    } catch (const hubmoe::OpError& e) {
      return std::string(e.what());
    }
    return "(no error) S=" + std::to_string(a.S) + " K=" + std::to_string(a.K) + " N=" + std::to_string(a.N);
  };
  auto expect_msg = [&](const std::string& msg, const std::string& want, const char* what) {
    const bool ok = msg.find(want) != std::string::npos;
    if (!ok) std::printf("%s: got message '%s', expected it to contain '%s'\n", what, msg.c_str(), want.c_str());
    t.check(ok, what, !ok, 0);
  };
  const int64_t x[] = {2, 3, 8}, w[] = {5, 8}, wt[] = {8, 5}, b[] = {5}, b4[] = {4};
  expect_msg(message(x, 3, w, 2, b, 1), "(no error) S=6 K=8 N=5", "Linear x [2, 3, 8], W [5, 8], bias [5] accepted");
  expect_msg(message(x, 3, wt, 2, nullptr, -1), "Linear: input 'W' has shape [8, 5], expected [N, 8] for 'x' of shape [2, 3, 8]",
             "Linear W given input-major raises OpError naming the shapes");
  expect_msg(message(x, 3, w, 2, b4, 1), "Linear: input 'bias' has shape [4], expected [5]", "Linear bad bias raises OpError");
  expect_msg(message(x, 0, w, 2, nullptr, -1), "Linear: input 'x' must be [..., K], got a scalar", "Linear scalar x raises OpError");
  expect_msg(message(x, 3, b, 1, nullptr, -1), "Linear: input 'W' must be [N, K], got [5]", "Linear 1-D W raises OpError");
}

}  // namespace testutil
