// Random problems for the kernel tests: host buffers in the kernel's dtype plus the reference's view of them.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../src/moe.h"
#include "../src/selective_scan.h"
#include "reference.h"
#include "test_util.h"

namespace testutil {

inline std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

struct ScanProblem {
  ref::Scan r;
  DType dtype;
  Buf x, dt, Bm, Cm, z;
  std::vector<float> A, D, dt_bias, state_in;
  bool has_z = false, has_bias = false, has_state = false;

  // Host pointers; y and state_out are left for the caller.
  hubmoe::ScanArgs args() const {
    hubmoe::ScanArgs a;
    a.B = r.B;
    a.L = r.L;
    a.E = r.E;
    a.N = r.N;
    a.dtype = dtype;
    a.x = x.data();
    a.dt = dt.data();
    a.A = A.data();
    a.Bm = Bm.data();
    a.Cm = Cm.data();
    a.D = D.data();
    a.z = has_z ? z.data() : nullptr;
    a.dt_bias = has_bias ? dt_bias.data() : nullptr;
    a.state_in = has_state ? state_in.data() : nullptr;
    a.delta_softplus = r.softplus;
    return a;
  }
};

inline ScanProblem make_scan(int64_t B, int64_t L, int64_t E, int64_t N, DType t, bool with_z, bool with_bias,
                             bool with_state, uint64_t seed, bool softplus = true) {
  Rng g(seed);
  ScanProblem p;
  p.dtype = t;
  p.has_z = with_z;
  p.has_bias = with_bias;
  p.has_state = with_state;
  p.r.B = B;
  p.r.L = L;
  p.r.E = E;
  p.r.N = N;
  p.r.softplus = softplus;
  const size_t BLE = static_cast<size_t>(B * L * E), BLN = static_cast<size_t>(B * L * N);
  p.x = make_buf(g.vec(BLE, -1, 1), t);
  std::vector<double> dt = softplus ? g.vec(BLE, -4, 1) : g.vec(BLE, 0.001, 0.5);
  if (softplus && BLE > 3) {  // exercise the v > 20 branch of softplus
    dt[1] = 24.0;
    dt[BLE / 2] = 21.5;
  }
  p.dt = make_buf(dt, t);
  p.Bm = make_buf(g.vec(BLN, -1.5, 1.5), t);
  p.Cm = make_buf(g.vec(BLN, -1.5, 1.5), t);
  p.z = make_buf(g.vec(BLE, -3, 3), t);
  std::vector<double> A(static_cast<size_t>(E * N));
  for (auto& a : A) a = -std::exp(g.uniform(-1.5, 2.5));
  p.A = to_f32(A);
  p.D = to_f32(g.vec(static_cast<size_t>(E), -1, 1));
  p.dt_bias = to_f32(softplus ? g.vec(static_cast<size_t>(E), -2, 0.5) : g.vec(static_cast<size_t>(E), 0, 0.1));
  p.state_in = to_f32(g.vec(static_cast<size_t>(B * E * N), -1, 1));
  p.r.x = p.x.vals;
  p.r.dt = p.dt.vals;
  p.r.A.assign(p.A.begin(), p.A.end());
  p.r.Bm = p.Bm.vals;
  p.r.Cm = p.Cm.vals;
  p.r.D.assign(p.D.begin(), p.D.end());
  if (with_z) p.r.z = p.z.vals;
  if (with_bias) p.r.dt_bias.assign(p.dt_bias.begin(), p.dt_bias.end());
  if (with_state) p.r.state_in.assign(p.state_in.begin(), p.state_in.end());
  return p;
}

struct MoeProblem {
  ref::Moe r;
  DType dtype, logits_dtype;
  Buf x, logits, fc1, fc1_bias, fc2, fc2_bias;
  bool has_bias = false;
  std::vector<float> fc1_scap, fc2_scap;  // [X, 2] SCAP (mode, threshold); empty = absent (see add_scap)
  hubmoe::MoeLayout layout = hubmoe::MoeLayout::output_major;  // of fc1/fc2 (r always holds output-major values)

  hubmoe::MoeArgs args() const {
    hubmoe::MoeArgs a;
    a.S = r.S;
    a.H = r.H;
    a.X = r.X;
    a.I = r.I;
    a.F1 = r.glu ? 2 * r.I : r.I;
    a.k = r.k;
    a.routing = hubmoe::parse_routing(r.routing);
    a.renormalize = r.renormalize;
    a.act = hubmoe::parse_activation(r.activation);
    a.glu = r.glu;
    a.layout = layout;
    a.dtype = dtype;
    a.logits_dtype = logits_dtype;
    a.x = x.data();
    a.logits = r.routing == "none" ? nullptr : logits.data();  // routing none takes no router logits
    a.fc1 = fc1.data();
    a.fc1_bias = has_bias ? fc1_bias.data() : nullptr;
    a.fc2 = fc2.data();
    a.fc2_bias = has_bias ? fc2_bias.data() : nullptr;
    a.fc1_scap = fc1_scap.empty() ? nullptr : fc1_scap.data();
    a.fc2_scap = fc2_scap.empty() ? nullptr : fc2_scap.data();
    return a;
  }
};

inline MoeProblem make_moe(int64_t S, int64_t H, int64_t X, int64_t I, int k, const std::string& routing,
                           bool renormalize, const std::string& act, bool glu, bool bias, DType t, DType logits_t,
                           uint64_t seed, bool with_ties = true) {
  Rng g(seed);
  MoeProblem p;
  p.dtype = t;
  p.logits_dtype = logits_t;
  p.has_bias = bias;
  p.r.S = S;
  p.r.H = H;
  p.r.X = X;
  p.r.I = I;
  p.r.k = k;
  p.r.routing = routing;
  p.r.renormalize = renormalize;
  p.r.activation = act;
  p.r.glu = glu;
  p.r.f16 = t == DType::f16;
  const int64_t F1 = glu ? 2 * I : I;
  p.x = make_buf(g.vec(static_cast<size_t>(S * H), -1, 1), t);
  std::vector<double> lg = g.vec(static_cast<size_t>(S * X), -3, 3);
  if (with_ties && S >= 3) {
    for (int64_t e = 0; e < X; ++e) lg[1 * X + e] = 0.25;  // token 1: all experts tie → experts 0..k-1
    if (X >= 4) {                                          // token 2: a tie for first place between 3 and 1
      for (int64_t e = 0; e < X; ++e) lg[2 * X + e] = -1.0;
      lg[2 * X + 3] = 2.0;
      lg[2 * X + 1] = 2.0;
    }
  }
  p.logits = make_buf(lg, logits_t);
  const double s1 = 1.0 / std::sqrt(static_cast<double>(H)), s2 = 1.0 / std::sqrt(static_cast<double>(I));
  p.fc1 = make_buf(g.vec(static_cast<size_t>(X * F1 * H), -2 * s1, 2 * s1), t);
  p.fc2 = make_buf(g.vec(static_cast<size_t>(X * H * I), -2 * s2, 2 * s2), t);
  p.fc1_bias = make_buf(g.vec(static_cast<size_t>(X * F1), -0.5, 0.5), t);
  p.fc2_bias = make_buf(g.vec(static_cast<size_t>(X * H), -0.5, 0.5), t);
  p.r.x = p.x.vals;
  p.r.logits = p.logits.vals;
  p.r.fc1 = p.fc1.vals;
  p.r.fc2 = p.fc2.vals;
  if (bias) {
    p.r.fc1_bias = p.fc1_bias.vals;
    p.r.fc2_bias = p.fc2_bias.vals;
  }
  return p;
}

// The CPU kernel's output for args (y allocated here), as values.
inline std::vector<double> moe_cpu_out(const hubmoe::MoeArgs& a0, const hubmoe::Parallel& par) {
  hubmoe::MoeArgs a = a0;
  std::vector<uint8_t> y(static_cast<size_t>(a.S * a.H) * hubmoe::dtype_size(a.dtype));
  a.y = y.data();
  hubmoe::moe_cpu(a, par);
  return read(y.data(), static_cast<size_t>(a.S * a.H), a.dtype);
}

// The double-precision reference's output for p.
inline std::vector<double> moe_ref_out(const MoeProblem& p) {
  std::vector<double> ry;
  ref::moe(p.r, ry);
  return ry;
}

// Each expert's [rows, cols] matrix transposed to [cols, rows] (bytes and values).
inline Buf transpose_experts(const Buf& b, int64_t X, int64_t rows, int64_t cols) {
  Buf t = b;
  const size_t es = hubmoe::dtype_size(b.dtype);
  for (int64_t e = 0; e < X; ++e)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t from = static_cast<size_t>((e * rows + r) * cols + c), to = static_cast<size_t>((e * cols + c) * rows + r);
        std::memcpy(t.bytes.data() + to * es, b.bytes.data() + from * es, es);
        t.vals[to] = b.vals[from];
      }
  return t;
}

// The same problem with input-major weights: fc1 [X, H, F1] (fc1[e, h, f] = the output-major fc1[e, f, h]) and
// fc2 [X, I, H]. The reference (r) keeps the output-major values: the op must compute the same function.
inline MoeProblem input_major(const MoeProblem& p) {
  MoeProblem q = p;
  const int64_t F1 = p.r.glu ? 2 * p.r.I : p.r.I;
  q.fc1 = transpose_experts(p.fc1, p.r.X, F1, p.r.H);
  q.fc2 = transpose_experts(p.fc2, p.r.X, p.r.H, p.r.I);
  q.layout = hubmoe::MoeLayout::input_major;
  return q;
}

// A SCAP threshold for the |v| values of one expert: near their median (about half pruned), and more than
// margin(t) away from every value, so that the tiny differences between the kernels' fp32 arithmetic and the
// reference's cannot move an element across it. It is the midpoint of the widest gap between sorted neighbours
// in the middle 40 % (then 80 %, then all) of the values.
template <typename Margin>
inline float scap_threshold(std::vector<double> v, Margin margin, const char* what) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  if (n < 2) return n ? static_cast<float>(v[0] / 2) : 0.f;
  for (double frac : {0.2, 0.4, 0.5}) {
    const size_t lo = static_cast<size_t>(n * (0.5 - frac)), hi = std::min(n - 1, static_cast<size_t>(n * (0.5 + frac)));
    size_t best = lo;
    for (size_t i = lo; i < hi; ++i)
      if (v[i + 1] - v[i] > v[best + 1] - v[best]) best = i;
    const float t = static_cast<float>((v[best] + v[best + 1]) / 2);
    const double m = margin(t);
    if (t - v[best] > m && v[best + 1] - t > m) return t;
  }
  std::fprintf(stderr, "scap_threshold: no gap wide enough for %s\n", what);
  std::abort();
}

// Adds SCAP masks to a MoE problem: fc1_scap and/or fc2_scap with modes uniform in [-0.3, 0.3] and thresholds that
// prune about half the elements of the tokens routed to each expert (scap_threshold). One routed expert (the last
// slot of the last token; with S = 1 and k = 1 an unused one instead, so that the routed one is pruned) gets
// (0, -1): unpruned. hidden_margin widens the fc2 margin, for comparisons with kernels whose h differs more (the
// CUDA gemm path stores fc1's output in T before the bias and activation).
inline void add_scap(MoeProblem& p, bool fc1, bool fc2, uint64_t seed, double hidden_margin = 0.0) {
  Rng g(seed);
  const int64_t S = p.r.S, H = p.r.H, X = p.r.X;
  const int k = p.r.k;
  std::vector<int> idx(static_cast<size_t>(S * k));
  {
    std::vector<float> w(static_cast<size_t>(k)), lg(static_cast<size_t>(X));
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t e = 0; e < X; ++e) lg[e] = static_cast<float>(p.r.logits[s * X + e]);
      hubmoe::route_token(lg.data(), X, k, hubmoe::parse_routing(p.r.routing), p.r.renormalize, &idx[s * k], w.data());
    }
  }
  int64_t unpruned = idx[S * k - 1];
  if (S == 1 && k == 1) unpruned = (unpruned + 1) % X;
  if (X == 1) unpruned = -1;  // routing none: the one expert is pruned
  auto routed = [&](int64_t s, int64_t e) {
    for (int j = 0; j < k; ++j)
      if (idx[s * k + j] == e) return true;
    return false;
  };
  const bool f16 = p.dtype == DType::f16;
  auto make = [&](bool hidden) {
    std::vector<double> sc(static_cast<size_t>(2 * X));
    for (int64_t e = 0; e < X; ++e) {
      const float mode = static_cast<float>(g.uniform(-0.3, 0.3));
      sc[2 * e] = mode;
      sc[2 * e + 1] = -1.0;
      if (e == unpruned) {
        sc[2 * e] = 0.0;
        continue;
      }
      std::vector<double> v;
      for (int64_t s = 0; s < S; ++s) {
        if (!routed(s, e)) continue;
        if (!hidden) {
          for (int64_t c = 0; c < H; ++c) v.push_back(std::fabs(static_cast<float>(p.r.x[s * H + c]) - mode));
        } else {
          for (double h : ref::moe_hidden(p.r, s, e))
            v.push_back(std::fabs(ref::round_t(static_cast<float>(h), f16) - mode));
        }
      }
      if (v.empty()) {  // no token: any threshold
        sc[2 * e + 1] = 0.5;
        continue;
      }
      // fc1: the kernels compute v exactly as the reference does. fc2: h differs by fp32 accumulation error, and
      // in fp16 its rounding to T may differ by one ulp of |h| ≤ t + |mode|.
      sc[2 * e + 1] = scap_threshold(
          v,
          [&](float t) {
            return hidden ? 1e-4 + hidden_margin + (f16 ? 1.5 * std::ldexp(t + std::fabs(mode), -10) : 0.0)
                          : 1e-6 * (t + 1.0);
          },
          hidden ? "fc2_scap" : "fc1_scap");
    }
    return sc;
  };
  if (fc1) {
    p.r.fc1_scap = make(false);
    p.fc1_scap = to_f32(p.r.fc1_scap);
  }
  if (fc2) {
    p.r.fc2_scap = make(true);  // from h with fc1_scap applied
    p.fc2_scap = to_f32(p.r.fc2_scap);
  }
}

}  // namespace testutil
