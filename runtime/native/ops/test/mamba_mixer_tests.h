// MambaMixer: random problems with left-padded rows, a double-precision reference from the definition (with the
// definition's roundings to T), a sequence split into two calls that carry both states, shape errors, and the CPU
// kernel's checks (included by test_cpu.cc; test_ort.cc and test_cuda.cu use the problems and the reference).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/mamba_mixer.h"
#include "mamba_conv_tests.h"
#include "test_util.h"

namespace testutil {

struct MambaMixerShape {
  int64_t B, T, E, K, N, R;
  bool norms, conv_bias, dt_bias;
};

struct MambaMixerProblem {
  MambaMixerShape s{};
  DType dtype = DType::f32;
  float eps = 1e-6f;
  MambaConvProblem conv;  // xz, mask, the conv's weight, bias and state
  Buf x_proj, dt_proj, dt_bias, A, D, ssm_state, norm[3];
  int64_t J() const { return s.R + 2 * s.N; }
  // Host pointers (the CPU kernel); tests on the device overwrite the pointers.
  hubmoe::MambaMixerArgs args(void* y, void* conv_out, float* ssm_out) const {
    hubmoe::MambaMixerArgs a;
    a.B = s.B, a.T = s.T, a.E = s.E, a.K = s.K, a.N = s.N, a.R = s.R, a.dtype = dtype, a.eps = eps;
    a.xz = conv.xz.data(), a.mask = conv.mask.data(), a.conv_weight = conv.weight.data();
    a.conv_bias = s.conv_bias ? conv.bias.data() : nullptr, a.conv_state = conv.state.data(), a.x_proj = x_proj.data(), a.dt_proj = dt_proj.data();
    a.dt_bias = s.dt_bias ? static_cast<const float*>(dt_bias.data()) : nullptr;
    a.A = static_cast<const float*>(A.data()), a.D = static_cast<const float*>(D.data());
    a.ssm_state = static_cast<const float*>(ssm_state.data());
    for (int g = 0; g < 3; ++g) a.norm[g] = s.norms ? norm[g].data() : nullptr;
    a.y = y, a.conv_state_out = conv_out, a.ssm_state_out = ssm_out;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[220];
    std::snprintf(b, sizeof b, "MambaMixer %s B=%lld T=%lld E=%lld K=%lld N=%lld R=%lld%s%s%s%s", hubmoe::dtype_name(dtype),
                  (long long)s.B, (long long)s.T, (long long)s.E, (long long)s.K, (long long)s.N, (long long)s.R,
                  s.norms ? " norms" : "", s.conv_bias ? "" : " no-conv-bias", s.dt_bias ? "" : " no-dt-bias", extra);
    return b;
  }
};

// Row b has its first min(b, T − 1) positions padded (mask 0, with non-zero xz there). Weights are scaled so that
// every stage stays of order one (x_proj and dt_proj by 1/√fan-in); dt_bias shifts Δ towards Mamba's usual range.
inline MambaMixerProblem make_mamba_mixer(const MambaMixerShape& s, DType t, uint64_t seed) {
  MambaMixerProblem p;
  p.s = s, p.dtype = t;
  p.conv = make_mamba_conv(s.B, s.T, s.E, s.K, s.conv_bias, t, seed);
  Rng r(seed ^ 0x9e3779b97f4a7c15ull);
  const int64_t B = s.B, E = s.E, N = s.N, R = s.R, J = R + 2 * N;
  const double sx = 1.7 / std::sqrt(static_cast<double>(E)), sd = 1.7 / std::sqrt(static_cast<double>(R));
  p.x_proj = make_buf(r.vec(static_cast<size_t>(E * J), -sx, sx), t);
  p.dt_proj = make_buf(r.vec(static_cast<size_t>(R * E), -sd, sd), t);
  p.dt_bias = make_buf(r.vec(static_cast<size_t>(E), -3.0, -1.0), DType::f32);
  std::vector<double> A(static_cast<size_t>(E * N));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) A[e * N + n] = -static_cast<double>(n + 1) * r.uniform(0.5, 1.5);
  p.A = make_buf(A, DType::f32);
  p.D = make_buf(r.vec(static_cast<size_t>(E), 0.5, 1.5), DType::f32);
  p.ssm_state = make_buf(r.vec(static_cast<size_t>(B * E * N), -1.0, 1.0), DType::f32);
  p.norm[0] = make_buf(r.vec(static_cast<size_t>(R), 0.5, 1.5), t);
  p.norm[1] = make_buf(r.vec(static_cast<size_t>(N), 0.5, 1.5), t);
  p.norm[2] = make_buf(r.vec(static_cast<size_t>(N), 0.5, 1.5), t);
  return p;
}

struct MambaMixerWant {
  std::vector<double> y, conv_state, ssm_state;
};

// From the definition (../src/mamba_mixer.h) in double, rounding to T where the definition does.
inline MambaMixerWant mamba_mixer_ref(const MambaMixerProblem& p) {
  const MambaMixerShape& s = p.s;
  const int64_t B = s.B, T = s.T, E = s.E, N = s.N, R = s.R, J = p.J(), S = B * T;
  const DType t = p.dtype;
  const MambaConvWant cw = mamba_conv_ref(p.conv);
  MambaMixerWant w;
  w.conv_state = cw.state;
  std::vector<double> u(cw.u.size());
  for (size_t i = 0; i < u.size(); ++i) u[i] = round_to(cw.u[i], t);
  std::vector<double> xd(static_cast<size_t>(S * J)), dt(static_cast<size_t>(S * R)), Bm(static_cast<size_t>(S * N)),
      Cm(Bm.size()), raw(static_cast<size_t>(S * E));
  for (int64_t r = 0; r < S; ++r) {
    for (int64_t j = 0; j < J; ++j) {
      double acc = 0;
      for (int64_t e = 0; e < E; ++e) acc += u[r * E + e] * p.x_proj.vals[e * J + j];
      xd[r * J + j] = round_to(acc, t);
    }
    const int64_t off[3] = {0, R, R + N}, len[3] = {R, N, N};
    std::vector<double>* dst[3] = {&dt, &Bm, &Cm};
    for (int g = 0; g < 3; ++g) {
      double ss = 0;
      for (int64_t i = 0; i < len[g]; ++i) ss += xd[r * J + off[g] + i] * xd[r * J + off[g] + i];
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(len[g]) + p.eps);
      for (int64_t i = 0; i < len[g]; ++i) {
        const double v = xd[r * J + off[g] + i];
        (*dst[g])[r * len[g] + i] = s.norms ? round_to(p.norm[g].vals[i] * v * inv, t) : v;
      }
    }
    for (int64_t e = 0; e < E; ++e) {
      double acc = 0;
      for (int64_t k = 0; k < R; ++k) acc += dt[r * R + k] * p.dt_proj.vals[k * E + e];
      raw[r * E + e] = round_to(acc, t);
    }
  }
  w.y.assign(static_cast<size_t>(S * E), 0.0);
  w.ssm_state = p.ssm_state.vals;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < E; ++e) {
      double* h = w.ssm_state.data() + (b * E + e) * N;
      for (int64_t tt = 0; tt < T; ++tt) {
        const int64_t r = b * T + tt, i = r * E + e;
        double d = raw[i] + (s.dt_bias ? p.dt_bias.vals[e] : 0.0);
        d = d > 20 ? d : std::log1p(std::exp(d));
        double y = 0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(d * p.A.vals[e * N + n]) * h[n] + d * u[i] * Bm[r * N + n];
          y += Cm[r * N + n] * h[n];
        }
        y += p.D.vals[e] * u[i];
        const double z = p.conv.xz.vals[r * 2 * E + E + e];
        w.y[i] = y * z / (1.0 + std::exp(-z));
      }
    }
  return w;
}

// fp16: every stage rounds to T and a rounding that lands the other way moves dt, B or C by one fp16 ulp.
inline double mamba_mixer_tol(DType t) { return t == DType::f32 ? 1e-5 : 3e-3; }

// Decode (T = 1) with and without norms and biases, prefill, T shorter than K − 1, K = 1 (no conv state), no
// tokens (B = 0, and T = 0: the states pass through), N not a multiple of 4, and a Jamba-like decode row.
inline std::vector<MambaMixerShape> mamba_mixer_shapes() {
  return {{1, 1, 8, 4, 4, 3, true, true, true},      {3, 1, 40, 4, 6, 5, false, true, true},
          {2, 5, 12, 4, 6, 5, false, false, false},   {3, 2, 16, 4, 5, 4, true, true, true},
          {2, 9, 40, 4, 16, 8, true, false, true},    {2, 7, 10, 1, 4, 3, false, true, false},
          {1, 1, 300, 4, 16, 19, true, true, true},   {0, 3, 8, 4, 4, 3, true, true, true},
          {2, 0, 8, 4, 4, 3, false, true, true}};
}

inline void test_mamba_mixer(Tally& t) {
  uint64_t seed = 9700;
  hubmoe::SerialParallel serial;
  ThreadParallel threads(3);
  for (DType dt : {DType::f32, DType::f16})
    for (const MambaMixerShape& s : mamba_mixer_shapes()) {
      MambaMixerProblem p = make_mamba_mixer(s, dt, seed++);
      const MambaMixerWant want = mamba_mixer_ref(p);
      Buf y = zeros(want.y.size(), dt), cs = zeros(want.conv_state.size(), dt);
      std::vector<float> ss(want.ssm_state.size());
      hubmoe::mamba_mixer_cpu(p.args(y.data(), cs.data(), ss.data()), threads);
      const double err = std::max({rel_err(read(y.data(), want.y.size(), dt), want.y, 1e-3),
                                   rel_err(read(cs.data(), want.conv_state.size(), dt), want.conv_state, 1e-3),
                                   rel_err(std::vector<double>(ss.begin(), ss.end()), want.ssm_state, 1e-3)});
      t.check_err(p.name(" CPU"), err, mamba_mixer_tol(dt));
      // Serial and threaded runs give the same bytes.
      Buf y1 = zeros(want.y.size(), dt), cs1 = zeros(want.conv_state.size(), dt);
      std::vector<float> ss1(ss.size());
      hubmoe::mamba_mixer_cpu(p.args(y1.data(), cs1.data(), ss1.data()), serial);
      const bool same = y1.bytes == y.bytes && cs1.bytes == cs.bytes && ss1 == ss;
      t.check(same, p.name(" CPU, serial = threaded"), same ? 0 : 1, 0);
      if (s.T < 2 || s.B == 0) continue;
      // The sequence in two calls, the first one's states feeding the second: the same bytes as one call.
      const int64_t T1 = s.T / 2, T2 = s.T - T1, E = s.E;
      MambaMixerProblem a = p, b = p;
      a.s.T = T1, b.s.T = T2;
      a.conv = p.conv.slice(0, T1), b.conv = p.conv.slice(T1, T2);
      Buf ya = zeros(static_cast<size_t>(s.B * T1 * E), dt), ca = zeros(cs.size(), dt);
      std::vector<float> sa(ss.size());
      hubmoe::mamba_mixer_cpu(a.args(ya.data(), ca.data(), sa.data()), threads);
      b.conv.state = ca;
      b.conv.state.vals = read(ca.data(), ca.size(), dt);
      b.ssm_state = make_buf(std::vector<double>(sa.begin(), sa.end()), DType::f32);
      Buf yb = zeros(static_cast<size_t>(s.B * T2 * E), dt), cb = zeros(cs.size(), dt);
      std::vector<float> sb(ss.size());
      hubmoe::mamba_mixer_cpu(b.args(yb.data(), cb.data(), sb.data()), threads);
      bool same2 = cb.bytes == cs.bytes && sb == ss;
      const size_t w = hubmoe::dtype_size(dt) * static_cast<size_t>(E);
      for (int64_t bb = 0; bb < s.B; ++bb)
        same2 = same2 &&
                std::equal(ya.bytes.begin() + bb * T1 * w, ya.bytes.begin() + (bb + 1) * T1 * w, y.bytes.begin() + bb * s.T * w) &&
                std::equal(yb.bytes.begin() + bb * T2 * w, yb.bytes.begin() + (bb + 1) * T2 * w, y.bytes.begin() + (bb * s.T + T1) * w);
      t.check(same2, p.name(" CPU, split in two calls carrying both states"), same2 ? 0 : 1, 0);
    }
  // Shape errors name the input and what it must be.
  struct Shp {
    std::vector<int64_t> d;
    bool absent = false;
    hubmoe::ShapeRef ref() const { return absent ? hubmoe::ShapeRef{} : hubmoe::ShapeRef{d.data(), static_cast<int>(d.size())}; }
  };
  auto throws = [&](int which, std::vector<int64_t> bad, bool absent, const char* needle) {
    // B = 2, T = 3, E = 4, K = 4, N = 2, R = 3 (J = 7)
    std::vector<Shp> in = {{{2, 3, 8}}, {{2, 3, 1}}, {{4, 1, 4}}, {{4}},    {{2, 4, 3}}, {{4, 7}},   {{3, 4}},
                           {{4}},       {{4, 2}},    {{4}},       {{2, 4, 2}}, {{3}},      {{2}},      {{2}}};
    in[which].d = bad;
    in[which].absent = absent;
    const hubmoe::ShapeRef norms[3] = {in[11].ref(), in[12].ref(), in[13].ref()};
    hubmoe::MambaMixerArgs a;
    std::string msg;
    try {
      hubmoe::mamba_mixer_check(in[0].ref(), in[1].ref(), in[2].ref(), in[3].ref(), in[4].ref(), in[5].ref(), in[6].ref(),
                                in[7].ref(), in[8].ref(), in[9].ref(), in[10].ref(), norms, a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    t.check(msg.find(needle) != std::string::npos, std::string("MambaMixer error: ") + needle, msg.empty() ? 1 : 0, 0);
    if (msg.find(needle) == std::string::npos) std::printf("  got: %s\n", msg.c_str());
  };
  throws(0, {2, 3, 7}, false, "'xz' must be [batch, sequence, 2·channels], got [2, 3, 7]");
  throws(1, {2, 1, 1}, false, "'mask' must be [2, 3, 1], got [2, 1, 1]");
  throws(2, {4, 4}, false, "'conv_weight' must be [4, 1, kernel], got [4, 4]");
  throws(3, {5}, false, "'conv_bias' must be [4], got [5]");
  throws(4, {2, 4, 2}, false, "'conv_state' must be [2, 4, 3], got [2, 4, 2]");
  throws(5, {4, 8}, false, "'x_proj' must be [4, 7] (dt_rank + 2·d_state columns), got [4, 8]");
  throws(6, {3, 5}, false, "'dt_proj' must be [dt_rank, 4], got [3, 5]");
  throws(7, {3}, false, "'dt_bias' must be [4], got [3]");
  throws(8, {4}, false, "'A' must be [4, d_state], got [4]");
  throws(9, {4, 1}, false, "'D' must be [4], got [4, 1]");
  throws(10, {2, 4, 3}, false, "'ssm_state' must be [2, 4, 2], got [2, 4, 3]");
  throws(10, {}, true, "'ssm_state' must be [2, 4, 2], got nothing");
  throws(12, {}, true, "'dt_norm', 'b_norm' and 'c_norm' must be all present or all absent, got 2 of them");
  throws(11, {4}, false, "'dt_norm' must be [3], got [4]");
  throws(13, {3}, false, "'c_norm' must be [2], got [3]");
}

}  // namespace testutil
