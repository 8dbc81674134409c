#include <algorithm>
#include <cmath>
#include <vector>

#include "linear_cpu.h"
#include "moe.h"

namespace hubmoe {

Routing parse_routing(const std::string& s) {
  if (s == "softmax") return Routing::softmax;
  if (s == "sigmoid") return Routing::sigmoid;
  if (s == "none") return Routing::none;
  throw OpError("MoE: attribute 'routing' must be \"softmax\", \"sigmoid\" or \"none\", got \"" + s + "\"");
}

Activation parse_activation(const std::string& s) {
  if (s == "silu") return Activation::silu;
  if (s == "gelu_erf") return Activation::gelu_erf;
  if (s == "gelu_tanh") return Activation::gelu_tanh;
  if (s == "relu") return Activation::relu;
  throw OpError("MoE: attribute 'activation' must be one of silu, gelu_erf, gelu_tanh, relu; got \"" + s + "\"");
}

MoeLayout parse_layout(const std::string& s) {
  if (s == "output_major") return MoeLayout::output_major;
  if (s == "input_major") return MoeLayout::input_major;
  throw OpError("MoE: attribute 'layout' must be \"output_major\" or \"input_major\", got \"" + s + "\"");
}

namespace {

// `form` (e.g. "[X, H, F1] (layout \"input_major\")") is appended to the message when given.
void expect(const int64_t* d, int r, const char* name, std::initializer_list<int64_t> want, const std::string& form = "") {
  bool ok = r == static_cast<int>(want.size());
  if (ok) {
    int i = 0;
    for (int64_t w : want) ok = ok && d[i++] == w;
  }
  if (!ok) {
    std::string w = "[";
    int i = 0;
    for (int64_t v : want) w += (i++ ? ", " : "") + std::to_string(v);
    throw OpError(std::string("MoE: input '") + name + "' has shape " + dims_str(d, r) + ", expected " + w + "]" +
                  (form.empty() ? "" : " = " + form));
  }
}

// SCAP mask of one row in place: v = row[i] − mode; row[i] = |v| > thr ? round_T(v) : 0 (fp32 comparisons; a NaN
// v is pruned). With T = float16 the kept values are rounded to fp16, as the CUDA kernels store them.
template <typename T>
inline void scap_row(float* row, int64_t n, const float* scap) {
  const float mode = scap[0], thr = scap[1];
  for (int64_t i = 0; i < n; ++i) {
    const float v = row[i] - mode;
    row[i] = std::fabs(v) > thr ? to_float(from_float<T>(v)) : 0.f;
  }
}

template <typename T>
void moe_impl(const MoeArgs& a, const Parallel& par) {
  const int64_t S = a.S, H = a.H, X = a.X, I = a.I, F1 = a.F1;
  const int k = a.k;
  const T* x = static_cast<const T*>(a.x);
  const T* fc1 = static_cast<const T*>(a.fc1);
  const T* fc2 = static_cast<const T*>(a.fc2);
  const T* b1 = static_cast<const T*>(a.fc1_bias);
  const T* b2 = static_cast<const T*>(a.fc2_bias);
  const bool im = a.layout == MoeLayout::input_major;

  // Routing.
  std::vector<int> idx(static_cast<size_t>(S * k));
  std::vector<float> w(static_cast<size_t>(S * k));
  {
    std::vector<float> lg(static_cast<size_t>(X));
    for (int64_t s = 0; s < S; ++s) {
      if (a.routing == Routing::none) {  // one expert, weight 1 (moe_check: X = k = 1)
        route_token(nullptr, X, k, a.routing, false, &idx[s * k], &w[s * k]);
        continue;
      }
      for (int64_t e = 0; e < X; ++e) {
        lg[e] = a.logits_dtype == DType::f32 ? static_cast<const float*>(a.logits)[s * X + e]
                                             : half_to_float(static_cast<const half_t*>(a.logits)[s * X + e].bits);
      }
      route_token(lg.data(), X, k, a.routing, a.renormalize, &idx[s * k], &w[s * k]);
    }
  }
  // Tokens of each expert (counting sort, in token order).
  std::vector<int64_t> offset(static_cast<size_t>(X + 1), 0);
  for (int64_t i = 0; i < S * k; ++i) ++offset[idx[i] + 1];
  for (int64_t e = 0; e < X; ++e) offset[e + 1] += offset[e];
  std::vector<int64_t> entry(static_cast<size_t>(S * k));  // token*k + slot, grouped by expert
  {
    std::vector<int64_t> cursor(offset.begin(), offset.end() - 1);
    for (int64_t i = 0; i < S * k; ++i) entry[cursor[idx[i]]++] = i;
  }

  std::vector<float> acc(static_cast<size_t>(S * H), 0.f);
  std::vector<float> xe, h1, hh, oe;
  for (int64_t e = 0; e < X; ++e) {
    const int64_t M = offset[e + 1] - offset[e];
    if (M == 0) continue;
    const int64_t* ent = entry.data() + offset[e];
    xe.resize(static_cast<size_t>(M * H));
    for (int64_t m = 0; m < M; ++m) {
      load_row(x + (ent[m] / k) * H, H, xe.data() + m * H);
      if (a.fc1_scap) scap_row<T>(xe.data() + m * H, H, a.fc1_scap + 2 * e);
    }
    h1.resize(static_cast<size_t>(M * F1));
    if (im)
      linear_input_major<T>(xe.data(), M, H, fc1 + e * H * F1, b1 ? b1 + e * F1 : nullptr, F1, h1.data(), par);
    else
      linear_output_major<T>(xe.data(), M, H, fc1 + e * F1 * H, b1 ? b1 + e * F1 : nullptr, F1, h1.data(), par);
    hh.resize(static_cast<size_t>(M * I));
    for (int64_t m = 0; m < M; ++m) {
      const float* g = h1.data() + m * F1;
      float* o = hh.data() + m * I;
      if (a.glu) {
        for (int64_t j = 0; j < I; ++j) o[j] = activate(a.act, g[j]) * g[I + j];
      } else {
        for (int64_t j = 0; j < I; ++j) o[j] = activate(a.act, g[j]);
      }
      if (a.fc2_scap) {  // h is rounded to T first (the CUDA kernels store it in T), then masked
        for (int64_t j = 0; j < I; ++j) o[j] = to_float(from_float<T>(o[j]));
        scap_row<T>(o, I, a.fc2_scap + 2 * e);
      }
    }
    oe.resize(static_cast<size_t>(M * H));
    if (im)
      linear_input_major<T>(hh.data(), M, I, fc2 + e * I * H, b2 ? b2 + e * H : nullptr, H, oe.data(), par);
    else
      linear_output_major<T>(hh.data(), M, I, fc2 + e * H * I, b2 ? b2 + e * H : nullptr, H, oe.data(), par);
    for (int64_t m = 0; m < M; ++m) {
      const float wt = w[ent[m]];
      float* dst = acc.data() + (ent[m] / k) * H;
      const float* src = oe.data() + m * H;
      for (int64_t j = 0; j < H; ++j) dst[j] += wt * src[j];
    }
  }
  T* y = static_cast<T*>(a.y);
  for (int64_t i = 0; i < S * H; ++i) y[i] = from_float<T>(acc[i]);
}

}  // namespace

inline float route_key(float v) { return std::isnan(v) ? -INFINITY : v; }

void route_token(const float* logits, int64_t X, int k, Routing routing, bool renormalize, int* idx, float* w) {
  if (routing == Routing::none) {  // no logits: experts 0..k-1 (moe_check allows only X = k = 1), weight 1
    for (int j = 0; j < k; ++j) idx[j] = j, w[j] = 1.f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t e = 0; e < X; ++e) mx = std::max(mx, logits[e]);
  float denom = 1.f;
  if (routing == Routing::softmax) {
    denom = 0.f;
    for (int64_t e = 0; e < X; ++e) denom += std::exp(logits[e] - mx);
  }
  float sum = 0.f;
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int64_t e = 0; e < X; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || idx[i] == e;
      if (taken) continue;
      // A NaN logit ranks as −inf; ties keep the lower index. (The CUDA router applies the same rule.)
      if (best < 0 || route_key(logits[e]) > route_key(logits[best])) best = static_cast<int>(e);
    }
    idx[j] = best;
    const float v = logits[best];
    w[j] = routing == Routing::softmax ? std::exp(v - mx) / denom : 1.f / (1.f + std::exp(-v));
    sum += w[j];
  }
  if (renormalize && sum > 0.f)
    for (int j = 0; j < k; ++j) w[j] /= sum;
}

void moe_check(const int64_t* x, int xr, const int64_t* lg, int lr, const int64_t* f1, int f1r, const int64_t* b1,
               int b1r, const int64_t* f2, int f2r, const int64_t* b2, int b2r, MoeArgs& a, const int64_t* s1,
               int s1r, const int64_t* s2, int s2r) {
  // x is [..., H]: every leading dim is a token dim (S = their product); router_logits is [..., X] alike.
  if (xr < 1) throw OpError("MoE: input 'x' must be [..., H], got a scalar");
  // fc1 is [X, F1, H] and fc2 [X, H, I] (output_major), or fc1 [X, H, F1] and fc2 [X, I, H] (input_major).
  const bool im = a.layout == MoeLayout::input_major;
  const std::string in_layout = std::string(" (layout \"") + layout_name(a.layout) + "\")";
  const std::string f1_form = (im ? "[X, H, F1]" : "[X, F1, H]") + in_layout;
  const std::string f2_form = (im ? "[X, I, H]" : "[X, H, I]") + in_layout;
  if (f1r != 3) throw OpError("MoE: input 'fc1' must be " + f1_form + ", got " + dims_str(f1, f1r));
  if (f2r != 3) throw OpError("MoE: input 'fc2' must be " + f2_form + ", got " + dims_str(f2, f2r));
  int64_t S = 1;
  for (int i = 0; i + 1 < xr; i++) S *= x[i];
  const int64_t H = x[xr - 1], X = f1[0], F1 = im ? f1[2] : f1[1], I = im ? f2[1] : f2[2];
  if (a.routing == Routing::none) {
    // A dense MLP: one expert that every token takes with weight 1.
    if (lr >= 0) throw OpError("MoE: routing \"none\" takes no 'router_logits', got one of shape " + dims_str(lg, lr));
    if (X != 1) throw OpError("MoE: routing \"none\" needs exactly one expert, fc1 has " + std::to_string(X));
    if (a.k != 1) throw OpError("MoE: routing \"none\" needs k = 1, got " + std::to_string(a.k));
  } else if (lr < 0) {
    throw OpError("MoE: input 'router_logits' is missing (only routing \"none\" runs without it)");
  }
  bool lg_ok = lr < 0 || (lr == xr && lg[lr - 1] == X);
  for (int i = 0; lr >= 0 && lg_ok && i + 1 < xr; i++) lg_ok = lg[i] == x[i];
  if (!lg_ok) throw OpError("MoE: input 'router_logits' has shape " + dims_str(lg, lr) + ", expected the leading dims of 'x' " + dims_str(x, xr) + " then " + std::to_string(X));
  // fc2 first: I is read from it, so its other dims are checked against fc1's X and x's H before fc1 is checked
  // against I.
  if (f2[0] != X || (im ? f2[2] : f2[1]) != H) {
    const std::string x_s = std::to_string(X), h_s = std::to_string(H);
    throw OpError("MoE: input 'fc2' has shape " + dims_str(f2, f2r) + ", expected [" + x_s + ", " +
                  (im ? "I, " + h_s : h_s + ", I") + "] = " + f2_form);
  }
  const int64_t F1w = a.glu ? 2 * I : I;
  if (im)
    expect(f1, f1r, "fc1", {X, H, F1w}, f1_form + (a.glu ? ", F1 = 2I" : ", F1 = I"));
  else
    expect(f1, f1r, "fc1", {X, F1w, H}, f1_form + (a.glu ? ", F1 = 2I" : ", F1 = I"));
  if (b1r >= 0) expect(b1, b1r, "fc1_bias", {X, F1});
  if (b2r >= 0) expect(b2, b2r, "fc2_bias", {X, H});
  auto expect_scap = [&](const int64_t* d, int r, const char* name) {
    if (r >= 0 && !(r == 2 && d[0] == X && d[1] == 2))
      throw OpError(std::string("MoE: input '") + name + "' must be [X, 2] = [" + std::to_string(X) + ", 2], got " +
                    dims_str(d, r));
  };
  expect_scap(s1, s1r, "fc1_scap");
  expect_scap(s2, s2r, "fc2_scap");
  if (X < 1) throw OpError("MoE: there must be at least one expert");
  if (a.k < 1 || a.k > X)
    throw OpError("MoE: attribute 'k' = " + std::to_string(a.k) + " must be in [1, " + std::to_string(X) + "]");
  a.S = S;
  a.H = H;
  a.X = X;
  a.I = I;
  a.F1 = F1;
}

void moe_cpu(const MoeArgs& a, const Parallel& par) {
  if (a.dtype == DType::f32)
    moe_impl<float>(a, par);
  else
    moe_impl<half_t>(a, par);
}

}  // namespace hubmoe
