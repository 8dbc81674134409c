// Random problems for the kernel tests: host buffers in the kernel's dtype plus the reference's view of them.
#pragma once

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
    a.dtype = dtype;
    a.logits_dtype = logits_dtype;
    a.x = x.data();
    a.logits = logits.data();
    a.fc1 = fc1.data();
    a.fc1_bias = has_bias ? fc1_bias.data() : nullptr;
    a.fc2 = fc2.data();
    a.fc2_bias = has_bias ? fc2_bias.data() : nullptr;
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

}  // namespace testutil
