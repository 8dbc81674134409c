// Straightforward double-precision references for the ops, written from the op contract (../README.md),
// independent of the kernels' code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ref {

struct Scan {
  int64_t B, L, E, N;
  std::vector<double> x, dt, A, Bm, Cm, D, z, dt_bias, state_in;  // empty = absent (z, dt_bias, state_in)
  bool softplus = true;
};

// y [B, L, E], state [B, E, N]
inline void scan(const Scan& s, std::vector<double>& y, std::vector<double>& state) {
  y.assign(static_cast<size_t>(s.B * s.L * s.E), 0.0);
  state.assign(static_cast<size_t>(s.B * s.E * s.N), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t e = 0; e < s.E; ++e) {
      std::vector<double> h(static_cast<size_t>(s.N));
      for (int64_t n = 0; n < s.N; ++n) h[n] = s.state_in.empty() ? 0.0 : s.state_in[(b * s.E + e) * s.N + n];
      for (int64_t t = 0; t < s.L; ++t) {
        const int64_t i = (b * s.L + t) * s.E + e;
        double v = s.dt[i] + (s.dt_bias.empty() ? 0.0 : s.dt_bias[e]);
        const double d = s.softplus ? (v > 20.0 ? v : std::log1p(std::exp(v))) : v;
        double acc = 0.0;
        for (int64_t n = 0; n < s.N; ++n) {
          h[n] = std::exp(d * s.A[e * s.N + n]) * h[n] + d * s.Bm[(b * s.L + t) * s.N + n] * s.x[i];
          acc += s.Cm[(b * s.L + t) * s.N + n] * h[n];
        }
        double yv = acc + s.D[e] * s.x[i];
        if (!s.z.empty()) yv *= s.z[i] / (1.0 + std::exp(-s.z[i]));
        y[i] = yv;
      }
      for (int64_t n = 0; n < s.N; ++n) state[(b * s.E + e) * s.N + n] = h[n];
    }
}

inline double act(const std::string& a, double v) {
  if (a == "silu") return v / (1.0 + std::exp(-v));
  if (a == "gelu_erf") return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
  if (a == "gelu_tanh") return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
  if (a == "relu") return v > 0 ? v : 0.0;
  return NAN;
}

struct Moe {
  int64_t S, H, X, I;
  int k;
  std::string routing, activation;
  bool renormalize, glu;
  std::vector<double> x, logits, fc1, fc1_bias, fc2, fc2_bias;  // biases empty = absent
  std::vector<double> fc1_scap, fc2_scap;  // [X, 2] (mode, threshold) per expert; empty = absent
  bool f16 = false;                        // T is float16: round_T in the SCAP masks rounds to fp16
};

// Round to the nearest fp16 value (ties to even; subnormals; |v| ≥ 65520 → inf), computed in double.
inline double round_half(double v) {
  if (std::isnan(v) || std::isinf(v)) return v;
  const double a = std::fabs(v);
  if (a >= 65520.0) return std::copysign(INFINITY, v);
  int e = 0;
  std::frexp(a, &e);                          // a = f·2^e, f in [0.5, 1)
  const int lead = std::max(e - 1, -14);      // exponent of the leading bit, clamped to the subnormal range
  const double ulp = std::ldexp(1.0, lead - 10);
  return std::copysign(std::nearbyint(a / ulp) * ulp, v);  // nearbyint: ties to even in the default mode
}

// round_T of an fp32 value.
inline float round_t(float v, bool f16) { return f16 ? static_cast<float>(round_half(v)) : v; }

// The SCAP mask of one element, in fp32 as the contract states: v = value − mode; |v| > threshold ? round_T(v) : 0.
inline double scap(double value, const std::vector<double>& sc, int64_t e, bool f16) {
  const float v = static_cast<float>(value) - static_cast<float>(sc[2 * e]);
  return std::fabs(v) > static_cast<float>(sc[2 * e + 1]) ? round_t(v, f16) : 0.0;
}

// Expert e's hidden activation h for token s (fc1's input masked with fc1_scap when present), before fc2_scap.
inline std::vector<double> moe_hidden(const Moe& m, int64_t s, int64_t e) {
  const int64_t F1 = m.glu ? 2 * m.I : m.I;
  std::vector<double> xs(m.x.begin() + s * m.H, m.x.begin() + (s + 1) * m.H);
  if (!m.fc1_scap.empty())
    for (auto& v : xs) v = scap(v, m.fc1_scap, e, m.f16);
  std::vector<double> h1(static_cast<size_t>(F1));
  for (int64_t r = 0; r < F1; ++r) {
    double acc = m.fc1_bias.empty() ? 0.0 : m.fc1_bias[e * F1 + r];
    for (int64_t c = 0; c < m.H; ++c) acc += m.fc1[(e * F1 + r) * m.H + c] * xs[c];
    h1[r] = acc;
  }
  std::vector<double> h(static_cast<size_t>(m.I));
  for (int64_t i = 0; i < m.I; ++i) h[i] = m.glu ? act(m.activation, h1[i]) * h1[m.I + i] : act(m.activation, h1[i]);
  return h;
}

// fc2_scap applied to h: h is first rounded to T (v = round_T(h) − mode).
inline double scap_hidden(double h, const std::vector<double>& sc, int64_t e, bool f16) {
  return scap(round_t(static_cast<float>(h), f16), sc, e, f16);
}

inline void moe(const Moe& m, std::vector<double>& y) {
  y.assign(static_cast<size_t>(m.S * m.H), 0.0);
  for (int64_t s = 0; s < m.S; ++s) {
    std::vector<double> sc(static_cast<size_t>(m.X));
    double mx = -INFINITY, den = 0;
    for (int64_t e = 0; e < m.X; ++e) mx = std::max(mx, m.logits[s * m.X + e]);
    for (int64_t e = 0; e < m.X; ++e) den += std::exp(m.logits[s * m.X + e] - mx);
    for (int64_t e = 0; e < m.X; ++e) {
      const double l = m.logits[s * m.X + e];
      // routing none: one expert, weight 1 (a dense MLP)
      sc[e] = m.routing == "none" ? 1.0 : m.routing == "softmax" ? std::exp(l - mx) / den : 1.0 / (1.0 + std::exp(-l));
    }
    // top-k like torch.topk: largest first, ties → lower index (stable sort by descending score)
    std::vector<int64_t> order(static_cast<size_t>(m.X));
    for (int64_t e = 0; e < m.X; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sc[a] > sc[b]; });
    double sum = 0;
    for (int j = 0; j < m.k; ++j) sum += sc[order[j]];
    for (int j = 0; j < m.k; ++j) {
      const int64_t e = order[j];
      const double w = m.renormalize ? sc[e] / sum : sc[e];
      std::vector<double> h = moe_hidden(m, s, e);
      if (!m.fc2_scap.empty())
        for (auto& v : h) v = scap_hidden(v, m.fc2_scap, e, m.f16);
      for (int64_t o = 0; o < m.H; ++o) {
        double acc = m.fc2_bias.empty() ? 0.0 : m.fc2_bias[e * m.H + o];
        for (int64_t i = 0; i < m.I; ++i) acc += m.fc2[(e * m.H + o) * m.I + i] * h[i];
        y[s * m.H + o] += w * acc;
      }
    }
  }
}

}  // namespace ref
