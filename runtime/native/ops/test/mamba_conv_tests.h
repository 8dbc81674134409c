// MambaConv: random problems with left-padded rows, a double-precision reference from the definition, a sequence
// split into two calls that carry the state, and the CPU kernel's checks (included by test_cpu.cc; test_ort.cc and
// test_cuda.cu use the problems and the reference).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../src/mamba_conv.h"
#include "test_util.h"

namespace testutil {

struct MambaConvProblem {
  DType dtype = DType::f32;
  int64_t B = 0, T = 0, E = 0, K = 0;
  bool has_bias = true;
  Buf xz, mask, weight, bias, state;
  hubmoe::MambaConvArgs args(void* u, void* z, void* state_out) const {
    hubmoe::MambaConvArgs a;
    a.B = B, a.T = T, a.E = E, a.K = K, a.dtype = dtype;
    a.xz = xz.data(), a.mask = mask.data(), a.weight = weight.data(), a.bias = has_bias ? bias.data() : nullptr;
    a.state = state.data(), a.u = u, a.z = z, a.state_out = state_out;
    return a;
  }
  // Time steps [from, from + len) of every row, with the same state.
  MambaConvProblem slice(int64_t from, int64_t len) const {
    auto part = [&](const Buf& src, int64_t width) {
      std::vector<double> v;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < len * width; ++i) v.push_back(src.vals[(b * T + from) * width + i]);
      return make_buf(v, dtype);
    };
    MambaConvProblem q = *this;
    q.T = len, q.xz = part(xz, 2 * E), q.mask = part(mask, 1);
    return q;
  }
  std::string name(const char* extra = "") const {
    char b[180];
    std::snprintf(b, sizeof b, "MambaConv %s B=%lld T=%lld E=%lld K=%lld%s%s", hubmoe::dtype_name(dtype), (long long)B,
                  (long long)T, (long long)E, (long long)K, has_bias ? "" : " no-bias", extra);
    return b;
  }
};

// Row b has its first min(b, T − 1) positions padded (mask 0, with non-zero xz there, which must not leak in).
inline MambaConvProblem make_mamba_conv(int64_t B, int64_t T, int64_t E, int64_t K, bool bias, DType t, uint64_t seed) {
  Rng r(seed);
  MambaConvProblem p;
  p.dtype = t, p.B = B, p.T = T, p.E = E, p.K = K, p.has_bias = bias;
  p.xz = make_buf(r.vec(static_cast<size_t>(B * T * 2 * E), -2.0, 2.0), t);
  std::vector<double> m(static_cast<size_t>(B * T), 1.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < std::min<int64_t>(b, T - 1); ++i) m[b * T + i] = 0.0;
  p.mask = make_buf(m, t);
  p.weight = make_buf(r.vec(static_cast<size_t>(E * K), -0.6, 0.6), t);
  p.bias = make_buf(r.vec(static_cast<size_t>(E), -0.3, 0.3), t);
  p.state = make_buf(r.vec(static_cast<size_t>(B * E * (K - 1)), -1.5, 1.5), t);
  return p;
}

struct MambaConvWant {
  std::vector<double> u, z, state;
};

// From the definition (../src/mamba_conv.h), in double; mask · x rounded to T as the kernels store it.
inline MambaConvWant mamba_conv_ref(const MambaConvProblem& p) {
  MambaConvWant w;
  w.u.assign(static_cast<size_t>(p.B * p.T * p.E), 0.0);
  w.z.assign(w.u.size(), 0.0);
  w.state.assign(static_cast<size_t>(p.B * p.E * (p.K - 1)), 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t e = 0; e < p.E; ++e) {
      std::vector<double> s;
      for (int64_t j = 0; j < p.K - 1; ++j) s.push_back(p.state.vals[(b * p.E + e) * (p.K - 1) + j]);
      for (int64_t t = 0; t < p.T; ++t) {
        const int64_t row = b * p.T + t;
        s.push_back(make_buf({p.mask.vals[row] * p.xz.vals[row * 2 * p.E + e]}, p.dtype).vals[0]);
      }
      for (int64_t t = 0; t < p.T; ++t) {
        const int64_t row = b * p.T + t;
        double acc = p.has_bias ? p.bias.vals[e] : 0.0;
        for (int64_t k = 0; k < p.K; ++k) acc += p.weight.vals[e * p.K + k] * s[t + k];
        w.u[row * p.E + e] = p.mask.vals[row] * acc / (1.0 + std::exp(-acc));
        w.z[row * p.E + e] = p.xz.vals[row * 2 * p.E + p.E + e];
      }
      for (int64_t j = 0; j < p.K - 1; ++j) w.state[(b * p.E + e) * (p.K - 1) + j] = s[p.T + j];
    }
  return w;
}

inline double mamba_conv_tol(DType t) { return t == DType::f32 ? 2e-6 : 1.5e-3; }

struct MambaConvShape {
  int64_t B, T, E, K;
  bool bias;
};
// Decode (T = 1), short prefill (T < K − 1: the new state still holds old state), prefill, K = 1 (no state), K = 2,
// no bias, Jamba-like E at decode.
inline std::vector<MambaConvShape> mamba_conv_shapes() {
  return {{1, 1, 8, 4, true}, {3, 2, 5, 4, true}, {2, 17, 12, 4, false}, {2, 9, 6, 1, true},
          {3, 7, 10, 2, true}, {1, 1, 300, 4, true}, {4, 33, 40, 4, true}, {0, 3, 4, 4, true}};
}

inline void test_mamba_conv(Tally& t) {
  uint64_t seed = 9100;
  for (DType dt : {DType::f32, DType::f16})
    for (const MambaConvShape& s : mamba_conv_shapes()) {
      MambaConvProblem p = make_mamba_conv(s.B, s.T, s.E, s.K, s.bias, dt, seed++);
      const MambaConvWant want = mamba_conv_ref(p);
      Buf u = zeros(want.u.size(), dt), z = zeros(want.z.size(), dt), st = zeros(want.state.size(), dt);
      hubmoe::mamba_conv_cpu(p.args(u.data(), z.data(), st.data()));
      const double err = std::max({rel_err(read(u.data(), want.u.size(), dt), want.u, 1e-3),
                                   rel_err(read(z.data(), want.z.size(), dt), want.z, 1e-3),
                                   rel_err(read(st.data(), want.state.size(), dt), want.state, 1e-3)});
      t.check_err(p.name(" CPU"), err, mamba_conv_tol(dt));
      if (p.T < 2 || p.B == 0) continue;
      // The sequence in two calls, the first one's state_out feeding the second: the same bytes as one call.
      const int64_t T1 = p.T / 2, T2 = p.T - T1;
      MambaConvProblem a = p.slice(0, T1), b = p.slice(T1, T2);
      Buf ua = zeros(static_cast<size_t>(p.B * T1 * p.E), dt), za = ua, sa = zeros(want.state.size(), dt);
      hubmoe::mamba_conv_cpu(a.args(ua.data(), za.data(), sa.data()));
      b.state = sa;
      b.state.vals = read(sa.data(), sa.size(), dt);
      Buf ub = zeros(static_cast<size_t>(p.B * T2 * p.E), dt), zb = ub, sb = zeros(want.state.size(), dt);
      hubmoe::mamba_conv_cpu(b.args(ub.data(), zb.data(), sb.data()));
      bool same = sb.bytes == st.bytes;
      for (int64_t bb = 0; bb < p.B; ++bb) {
        const size_t w = hubmoe::dtype_size(dt) * static_cast<size_t>(p.E);
        same = same && std::equal(ua.bytes.begin() + bb * T1 * w, ua.bytes.begin() + (bb + 1) * T1 * w, u.bytes.begin() + bb * p.T * w) &&
               std::equal(ub.bytes.begin() + bb * T2 * w, ub.bytes.begin() + (bb + 1) * T2 * w, u.bytes.begin() + (bb * p.T + T1) * w);
      }
      t.check(same, p.name(" CPU, split in two calls carrying the state"), same ? 0 : 1, 0);
    }
  hubmoe::MambaConvArgs a;
  auto throws = [&](std::vector<int64_t> xz, std::vector<int64_t> m, std::vector<int64_t> w, std::vector<int64_t> b,
                    std::vector<int64_t> s, const char* needle) {
    std::string msg;
    try {
      hubmoe::mamba_conv_check(xz.data(), (int)xz.size(), m.data(), (int)m.size(), w.data(), (int)w.size(), b.data(),
                               b.empty() ? -1 : (int)b.size(), s.data(), (int)s.size(), a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    t.check(msg.find(needle) != std::string::npos, std::string("MambaConv error: ") + needle, msg.empty() ? 1 : 0, 0);
  };
  throws({2, 3, 7}, {2, 3, 1}, {3, 1, 4}, {3}, {2, 3, 3}, "'xz' must be [batch, sequence, 2·channels], got [2, 3, 7]");
  throws({2, 3, 8}, {2, 3, 1}, {4, 4}, {4}, {2, 4, 3}, "'weight' must be [4, 1, kernel], got [4, 4]");
  throws({2, 3, 8}, {2, 1, 1}, {4, 1, 4}, {4}, {2, 4, 3}, "'mask' must be [2, 3, 1], got [2, 1, 1]");
  throws({2, 3, 8}, {2, 3, 1}, {4, 1, 4}, {5}, {2, 4, 3}, "'bias' must be [4], got [5]");
  throws({2, 3, 8}, {2, 3, 1}, {4, 1, 4}, {}, {2, 4, 4}, "'state' must be [2, 4, 3], got [2, 4, 4]");
}

}  // namespace testutil
