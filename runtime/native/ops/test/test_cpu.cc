// CPU kernels of ai.hubmoe ops against double-precision references (reference.h) on random inputs.
// Exit status 0 when every check passes. Runs in CI (no GPU, no ONNX Runtime needed).
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <functional>

#include "problems.h"
#include "next_token_tests.h"
#include "split_rms_norm_tests.h"
#include "skip_rms_norm_tests.h"
#include "static_attention_mask_tests.h"
#include "mamba_conv_tests.h"
#include "mamba_mixer_tests.h"
#include "sparse_linear_tests.h"
#include "linear_tests.h"

using namespace testutil;
using hubmoe::DType;

namespace {

const double kTolF32 = 2e-5;  // fp32 kernels vs double: rounding of fp32 arithmetic
const double kTolF16 = 1e-3;  // fp16 outputs: half an fp16 ulp (4.9e-4 relative) plus fp32 arithmetic

std::string scan_name(const ScanProblem& p, const char* extra = "") {
  char b[256];
  std::snprintf(b, sizeof b, "SelectiveScan %s B=%lld L=%lld E=%lld N=%lld z=%d dt_bias=%d state_in=%d softplus=%d%s",
                hubmoe::dtype_name(p.dtype), (long long)p.r.B, (long long)p.r.L, (long long)p.r.E, (long long)p.r.N,
                p.has_z, p.has_bias, p.has_state, p.r.softplus, extra);
  return b;
}

struct ScanOut {
  std::vector<uint8_t> y;
  std::vector<float> state;
};

ScanOut run_scan(const hubmoe::ScanArgs& a0, const hubmoe::Parallel& par) {
  ScanOut o;
  o.y.resize(static_cast<size_t>(a0.B * a0.L * a0.E) * hubmoe::dtype_size(a0.dtype));
  o.state.resize(static_cast<size_t>(a0.B * a0.E * a0.N));
  hubmoe::ScanArgs a = a0;
  a.y = o.y.data();
  a.state_out = o.state.data();
  hubmoe::selective_scan_cpu(a, par);
  return o;
}

void test_scan(Tally& t, const hubmoe::Parallel& par) {
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f16})
    for (int64_t L : {1, 7, 64})
      for (int mask = 0; mask < 8; ++mask)
        for (int64_t N : {16, 5}) {
          if (N == 5 && mask != 7) continue;
          ScanProblem p = make_scan(2, L, 37, N, dt, mask & 1, mask & 2, mask & 4, seed++);
          ScanOut o = run_scan(p.args(), par);
          std::vector<double> ry, rs;
          ref::scan(p.r, ry, rs);
          const double tol = dt == DType::f32 ? kTolF32 : kTolF16;
          t.check_err(scan_name(p) + " y", rel_err(read(o.y.data(), ry.size(), dt), ry), tol);
          t.check_err(scan_name(p) + " state_out",
                      rel_err(read(o.state.data(), rs.size(), DType::f32), rs), kTolF32);
        }
  // delta_softplus = 0 (dt used as is)
  for (DType dt : {DType::f32, DType::f16}) {
    ScanProblem p = make_scan(1, 9, 33, 16, dt, true, true, true, 99, false);
    ScanOut o = run_scan(p.args(), par);
    std::vector<double> ry, rs;
    ref::scan(p.r, ry, rs);
    t.check_err(scan_name(p) + " y", rel_err(read(o.y.data(), ry.size(), dt), ry), dt == DType::f32 ? kTolF32 : kTolF16);
    t.check_err(scan_name(p) + " state_out", rel_err(read(o.state.data(), rs.size(), DType::f32), rs), kTolF32);
  }
  // A sequence split into two calls, carrying state_out → state_in, equals one call.
  for (DType dt : {DType::f32, DType::f16})
    for (bool first_state : {false, true}) {
      ScanProblem p = make_scan(2, 64, 40, 16, dt, true, true, first_state, 7 + first_state);
      ScanOut full = run_scan(p.args(), par);
      const int64_t L1 = 23, L2 = 64 - L1, B = 2, E = 40;
      const size_t es = hubmoe::dtype_size(dt);
      auto slice = [&](const Buf& b, int64_t width, int64_t t0, int64_t len) {
        std::vector<uint8_t> out(static_cast<size_t>(B * len * width) * es);
        for (int64_t bb = 0; bb < B; ++bb)
          std::memcpy(out.data() + static_cast<size_t>(bb * len * width) * es,
                      b.bytes.data() + static_cast<size_t>((bb * 64 + t0) * width) * es,
                      static_cast<size_t>(len * width) * es);
        return out;
      };
      std::vector<uint8_t> parts[2][5];
      const Buf* srcs[5] = {&p.x, &p.dt, &p.Bm, &p.Cm, &p.z};
      const int64_t widths[5] = {E, E, 16, 16, E};
      for (int i = 0; i < 5; ++i) {
        parts[0][i] = slice(*srcs[i], widths[i], 0, L1);
        parts[1][i] = slice(*srcs[i], widths[i], L1, L2);
      }
      ScanOut half[2];
      for (int h = 0; h < 2; ++h) {
        hubmoe::ScanArgs a = p.args();
        a.L = h == 0 ? L1 : L2;
        a.x = parts[h][0].data();
        a.dt = parts[h][1].data();
        a.Bm = parts[h][2].data();
        a.Cm = parts[h][3].data();
        a.z = parts[h][4].data();
        if (h == 1) a.state_in = half[0].state.data();
        half[h] = run_scan(a, par);
      }
      double ydiff = 0, sdiff = 0;
      std::vector<double> yf = read(full.y.data(), static_cast<size_t>(B * 64 * E), dt);
      std::vector<double> y0 = read(half[0].y.data(), static_cast<size_t>(B * L1 * E), dt);
      std::vector<double> y1 = read(half[1].y.data(), static_cast<size_t>(B * L2 * E), dt);
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t tt = 0; tt < 64; ++tt)
          for (int64_t e = 0; e < E; ++e) {
            const double got = tt < L1 ? y0[(bb * L1 + tt) * E + e] : y1[(bb * L2 + tt - L1) * E + e];
            ydiff = std::max(ydiff, std::fabs(got - yf[(bb * 64 + tt) * E + e]));
          }
      for (size_t i = 0; i < full.state.size(); ++i)
        sdiff = std::max(sdiff, std::fabs(double(full.state[i]) - half[1].state[i]));
      t.check_err(scan_name(p, " split 23+41 vs one call: y"), ydiff, 0.0);
      t.check_err(scan_name(p, " split 23+41 vs one call: state_out"), sdiff, 0.0);
    }
}

std::string moe_name(const MoeProblem& p) {
  char b[320];
  std::snprintf(b, sizeof b, "MoE %s logits=%s S=%lld H=%lld X=%lld I=%lld k=%d %s renorm=%d %s glu=%d bias=%d",
                hubmoe::dtype_name(p.dtype), hubmoe::dtype_name(p.logits_dtype), (long long)p.r.S, (long long)p.r.H,
                (long long)p.r.X, (long long)p.r.I, p.r.k, p.r.routing.c_str(), p.r.renormalize,
                p.r.activation.c_str(), p.r.glu, p.has_bias);
  return b;
}

void test_moe(Tally& t, const hubmoe::Parallel& par) {
  struct Route {
    const char* routing;
    int k;
    bool renorm;
  };
  const Route routes[] = {{"softmax", 2, false}, {"softmax", 1, false}, {"sigmoid", 1, false},
                          {"softmax", 3, true},  {"sigmoid", 2, true}};
  uint64_t seed = 1000;
  for (DType dt : {DType::f32, DType::f16})
    for (const Route& r : routes)
      for (const char* act : {"silu", "gelu_erf", "gelu_tanh", "relu"})
        for (bool glu : {false, true})
          for (bool bias : {false, true})
            for (int64_t S : {1, 33}) {
              // fp16 models may carry fp16 or fp32 router logits
              const DType lt = (dt == DType::f16 && (seed & 1)) ? DType::f16 : DType::f32;
              MoeProblem p = make_moe(S, 48, 8, 40, r.k, r.routing, r.renorm, act, glu, bias, dt, lt, seed++);
              t.check_err(moe_name(p), rel_err(moe_cpu_out(p.args(), par), moe_ref_out(p)), dt == DType::f32 ? kTolF32 : kTolF16);
            }
}

// The two family configurations the SCAP and input-major MoE tests run: Jamba's (softmax top-2, SwiGLU, no
// biases) and BlackMamba's (sigmoid top-1, erf-GELU, biases).
struct FamilyMoe {
  const char* routing;
  int k;
  const char* act;
  bool glu, bias;
};
const FamilyMoe kFamilyMoe[] = {{"softmax", 2, "silu", true, false}, {"sigmoid", 1, "gelu_erf", false, true}};

// SCAP masks (fc1_scap / fc2_scap) against the reference, in the two family configurations.
void test_moe_scap(Tally& t, const hubmoe::Parallel& par) {
  uint64_t seed = 5000;
  for (DType dt : {DType::f32, DType::f16})
    for (const FamilyMoe& c : kFamilyMoe)
      for (int64_t S : {1, 33})
        for (int masks : {3, 1, 2}) {  // bit 0: fc1_scap, bit 1: fc2_scap
          const DType lt = (dt == DType::f16 && (seed & 1)) ? DType::f16 : DType::f32;
          MoeProblem p = make_moe(S, 48, 8, 40, c.k, c.routing, false, c.act, c.glu, c.bias, dt, lt, seed);
          add_scap(p, masks & 1, masks & 2, seed++);
          std::vector<double> ry = moe_ref_out(p), ry0;
          const std::string what = moe_name(p) + (masks == 3 ? " fc1_scap+fc2_scap" : masks == 1 ? " fc1_scap" : " fc2_scap");
          t.check_err(what, rel_err(moe_cpu_out(p.args(), par), ry), dt == DType::f32 ? kTolF32 : kTolF16);
          // the masks must matter: the reference without them differs clearly
          ref::Moe r0 = p.r;
          r0.fc1_scap.clear();
          r0.fc2_scap.clear();
          ref::moe(r0, ry0);
          const double d = rel_err(ry0, ry);
          t.check(d > 1e-2, what + " differs from unmasked", d, 1e-2);
        }
  // (0, -1) for every expert keeps every element: fc1_scap is then exactly no mask (x − 0 rounds to x), and so is
  // fc2_scap in fp32 (in fp16 it rounds h to fp16, which the unmasked CPU kernel keeps in fp32).
  for (DType dt : {DType::f32, DType::f16})
    for (int64_t S : {1, 33}) {
      MoeProblem p = make_moe(S, 48, 8, 40, 2, "softmax", false, "silu", true, true, dt, DType::f32, 5100 + S);
      std::vector<float> keep(16);
      for (int e = 0; e < 8; ++e) keep[2 * e] = 0.f, keep[2 * e + 1] = -1.f;
      const size_t n = static_cast<size_t>(S * 48) * hubmoe::dtype_size(dt);
      std::vector<uint8_t> y0(n), y1(n);
      hubmoe::MoeArgs a = p.args();
      a.y = y0.data();
      hubmoe::moe_cpu(a, par);
      a.y = y1.data();
      a.fc1_scap = keep.data();
      if (dt == DType::f32) a.fc2_scap = keep.data();
      hubmoe::moe_cpu(a, par);
      t.check(y0 == y1, moe_name(p) + " SCAP (0, -1) everywhere: bit-identical to no mask", y0 != y1, 0);
    }
}

// Input-major weights (layout = input_major; the test transposes the problem's weights) against the reference, and
// against the same problem run output-major, in the two family configurations, with no masks and with both.
void test_moe_input_major(Tally& t, const hubmoe::Parallel& par) {
  struct Dims {
    int64_t S, H, I;
  };
  // H = 300, I = 280: several column tiles (256 wide) in both projections.
  const Dims dims[] = {{1, 48, 40}, {5, 48, 40}, {33, 48, 40}, {5, 300, 280}};
  uint64_t seed = 6000;
  for (DType dt : {DType::f32, DType::f16})
    for (const FamilyMoe& c : kFamilyMoe)
      for (const Dims& d : dims)
        for (bool masks : {false, true}) {
          const DType lt = (dt == DType::f16 && (seed & 1)) ? DType::f16 : DType::f32;
          MoeProblem p = make_moe(d.S, d.H, 8, d.I, c.k, c.routing, false, c.act, c.glu, c.bias, dt, lt, seed);
          if (masks) add_scap(p, true, true, seed);
          ++seed;
          const MoeProblem q = input_major(p);
          const size_t n = static_cast<size_t>(d.S * d.H);
          std::vector<uint8_t> y_om(n * hubmoe::dtype_size(dt)), y_im(y_om.size());
          hubmoe::MoeArgs a = p.args();
          a.y = y_om.data();
          hubmoe::moe_cpu(a, par);
          a = q.args();
          a.y = y_im.data();
          hubmoe::moe_cpu(a, par);
          std::vector<double> ry;
          ref::moe(p.r, ry);
          const std::string what = moe_name(p) + " input_major" + (masks ? " fc1_scap+fc2_scap" : "");
          const double tol = dt == DType::f32 ? kTolF32 : kTolF16;
          t.check_err(what, rel_err(read(y_im.data(), n, dt), ry), tol);
          t.check_err(what + " vs output_major", rel_err(read(y_im.data(), n, dt), read(y_om.data(), n, dt)), tol);
        }
}

// Routing none (a dense MLP as one expert, no router logits) against the reference: every activation, GLU or not,
// biases or not, 1 and 33 tokens; then with SCAP masks and input-major weights (the paths the converter may take).
void test_moe_dense(Tally& t, const hubmoe::Parallel& par) {
  uint64_t seed = 7000;
  for (DType dt : {DType::f32, DType::f16})
    for (const char* act : {"silu", "gelu_erf", "gelu_tanh", "relu"})
      for (bool glu : {false, true})
        for (bool bias : {false, true})
          for (int64_t S : {1, 33}) {
            MoeProblem p = make_moe(S, 48, 1, 40, 1, "none", false, act, glu, bias, dt, DType::f32, seed++);
            t.check_err(moe_name(p), rel_err(moe_cpu_out(p.args(), par), moe_ref_out(p)), dt == DType::f32 ? kTolF32 : kTolF16);
          }
  for (DType dt : {DType::f32, DType::f16})
    for (int64_t S : {1, 33})
      for (int variant : {0, 1, 2}) {  // 0: both SCAP masks, 1: input-major, 2: both
        MoeProblem p = make_moe(S, 48, 1, 40, 1, "none", false, "silu", true, true, dt, DType::f32, seed);
        if (variant != 1) add_scap(p, true, true, seed);
        ++seed;
        const MoeProblem q = variant ? input_major(p) : p;
        const std::string what = moe_name(p) + (variant == 0 ? " fc1_scap+fc2_scap" : variant == 1 ? " input_major"
                                                                                                     : " input_major fc1_scap+fc2_scap");
        t.check_err(what, rel_err(moe_cpu_out(q.args(), par), moe_ref_out(p)), dt == DType::f32 ? kTolF32 : kTolF16);
      }
}

void test_errors(Tally& t) {
  // Shape and attribute errors are reported, not crashed on.
  int caught = 0;
  try {
    hubmoe::parse_activation("swish");
  } catch (const hubmoe::OpError&) {
    ++caught;
  }
  try {
    hubmoe::MoeArgs a;
    a.k = 3;
    const int64_t x[] = {4, 8}, lg[] = {4, 2}, f1[] = {2, 6, 8}, f2[] = {2, 8, 6};
    hubmoe::moe_check(x, 2, lg, 2, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a);  // k > X
  } catch (const hubmoe::OpError&) {
    ++caught;
  }
  try {
    hubmoe::ScanArgs a;
    const int64_t x[] = {1, 3, 8}, dt[] = {1, 3, 8}, A[] = {8, 4}, B[] = {1, 3, 5}, D[] = {8};
    hubmoe::scan_check_shapes({x, 3}, {dt, 3}, {A, 2}, {B, 3}, {B, 3}, {D, 1}, {}, {}, {}, a);  // Bm has N=5 ≠ 4
  } catch (const hubmoe::OpError&) {
    ++caught;
  }
  t.check(caught == 3, "bad shapes/attributes raise OpError", caught, 3);
  {
    std::string msg;
    try {
      hubmoe::MoeArgs a;
      a.k = 1;
      const int64_t x[] = {4, 8}, lg[] = {4, 2}, f1[] = {2, 6, 8}, f2[] = {2, 8, 6}, s1[] = {2, 3}, s2[] = {2, 2};
      hubmoe::moe_check(x, 2, lg, 2, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a, s1, 2, s2, 2);  // fc1_scap [2, 3]
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    const bool ok = msg.find("'fc1_scap' must be [X, 2] = [2, 2], got [2, 3]") != std::string::npos;
    if (!ok) std::printf("bad fc1_scap shape: got message '%s'\n", msg.c_str());
    t.check(ok, "MoE bad fc1_scap shape raises OpError naming it", !ok, 0);
  }
  // layout: an unknown value, and output-major-shaped weights given with layout = input_major.
  auto message = [](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const hubmoe::OpError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto expect_msg = [&](const std::string& msg, const std::string& want, const char* what) {
    const bool ok = msg.find(want) != std::string::npos;
    if (!ok) std::printf("%s: got message '%s', expected it to contain '%s'\n", what, msg.c_str(), want.c_str());
    t.check(ok, what, !ok, 0);
  };
  expect_msg(message([] { hubmoe::parse_layout("row_major"); }),
             "MoE: attribute 'layout' must be \"output_major\" or \"input_major\", got \"row_major\"",
             "MoE bad layout value raises OpError naming the attribute");
  expect_msg(message([] {
               hubmoe::MoeArgs a;
               a.k = 1;
               a.glu = true;
               a.layout = hubmoe::MoeLayout::input_major;
               const int64_t x[] = {4, 8}, lg[] = {4, 2}, f1[] = {2, 12, 8}, f2[] = {2, 6, 8};  // fc1 output-major
               hubmoe::moe_check(x, 2, lg, 2, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a);
             }),
             "MoE: input 'fc1' has shape [2, 12, 8], expected [2, 8, 12] = [X, H, F1] (layout \"input_major\")",
             "MoE input_major fc1 of the output-major shape raises OpError with the input-major shape");
  expect_msg(message([] {
               hubmoe::MoeArgs a;
               a.k = 1;
               a.layout = hubmoe::MoeLayout::input_major;
               const int64_t x[] = {4, 8}, lg[] = {4, 2}, f1[] = {2, 8, 6}, f2[] = {2, 8, 6};  // fc2 output-major
               hubmoe::moe_check(x, 2, lg, 2, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a);
             }),
             "MoE: input 'fc2' has shape [2, 8, 6], expected [2, I, 8] = [X, I, H] (layout \"input_major\")",
             "MoE input_major fc2 of the output-major shape raises OpError with the input-major shape");
  // routing none: no router logits, one expert, k = 1; every other routing needs the logits.
  const int64_t dx[] = {4, 8}, dlg[] = {4, 1}, df1[] = {1, 6, 8}, df2[] = {1, 8, 6}, df1x2[] = {2, 6, 8}, df2x2[] = {2, 8, 6};
  auto dense_check = [&](const int64_t* lg, int lr, const int64_t* f1, const int64_t* f2, int k, hubmoe::Routing r) {
    return message([&] {
      hubmoe::MoeArgs a;
      a.k = k;
      a.routing = r;
      hubmoe::moe_check(dx, 2, lg, lr, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a);
    });
  };
  const auto none = hubmoe::Routing::none;
  expect_msg(dense_check(nullptr, -1, df1, df2, 1, none), "(no error)", "MoE routing none without router_logits accepted");
  expect_msg(dense_check(dlg, 2, df1, df2, 1, none), "MoE: routing \"none\" takes no 'router_logits', got one of shape [4, 1]",
             "MoE routing none with router_logits raises OpError");
  expect_msg(dense_check(nullptr, -1, df1x2, df2x2, 1, none), "MoE: routing \"none\" needs exactly one expert, fc1 has 2",
             "MoE routing none with two experts raises OpError");
  expect_msg(dense_check(nullptr, -1, df1, df2, 2, none), "MoE: routing \"none\" needs k = 1, got 2",
             "MoE routing none with k = 2 raises OpError");
  expect_msg(dense_check(nullptr, -1, df1, df2, 1, hubmoe::Routing::softmax),
             "MoE: input 'router_logits' is missing (only routing \"none\" runs without it)",
             "MoE softmax routing without router_logits raises OpError");
  expect_msg(message([] { hubmoe::parse_routing("dense"); }),
             "MoE: attribute 'routing' must be \"softmax\", \"sigmoid\" or \"none\", got \"dense\"",
             "MoE bad routing value raises OpError naming the values");
  {  // the same weights with the default layout pass
    hubmoe::MoeArgs a;
    a.k = 1;
    const int64_t x[] = {4, 8}, lg[] = {4, 2}, f1[] = {2, 6, 8}, f2[] = {2, 8, 6};
    const std::string msg = message([&] { hubmoe::moe_check(x, 2, lg, 2, f1, 3, nullptr, -1, f2, 3, nullptr, -1, a); });
    const bool ok = msg == "(no error)" && a.I == 6 && a.F1 == 6 && a.H == 8;
    t.check(ok, "MoE output_major shapes accepted by default", !ok, 0);
  }
}

void test_half_conversion(Tally& t) {
  // float_to_half is round-to-nearest-even and the inverse of half_to_float on every finite half.
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    const float f = hubmoe::half_to_float(static_cast<uint16_t>(h));
    if (hubmoe::float_to_half(f) != h) ++bad;
  }
  const float tricky[] = {65504.f, 65519.f, 65520.f, 5.96046448e-8f, 2.98023224e-8f,
                          std::nextafter(2.98023224e-8f, 1.f), 1e-10f, 0.1f};  // 2^-24, 2^-25 (tie → 0), just above
  const uint16_t want[] = {0x7bff, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x0001, 0x0000, 0x2e66};
  for (int i = 0; i < 8; ++i) bad += hubmoe::float_to_half(tricky[i]) != want[i];
  t.check(bad == 0, "fp16 conversion round trip", bad, 0);
}

}  // namespace

int main() {
  Tally t;
  test_half_conversion(t);
  test_errors(t);
  hubmoe::SerialParallel serial;
  ThreadParallel threads(4);
  test_scan(t, serial);
  test_scan(t, threads);
  test_moe(t, serial);
  test_moe(t, threads);
  test_moe_scap(t, serial);
  test_moe_scap(t, threads);
  test_moe_dense(t, serial);
  test_moe_dense(t, threads);
  test_moe_input_major(t, serial);
  test_moe_input_major(t, threads);
  test_sparse_linear_errors(t);
  test_sparse_linear(t, serial, kTolF32, kTolF16);
  test_sparse_linear(t, threads, kTolF32, kTolF16);
  test_next_token(t);
  test_linear(t, serial, kTolF32, kTolF16);
  test_linear(t, threads, kTolF32, kTolF16);
  test_split_rms_norm(t);
  test_skip_rms_norm(t, serial, threads);
  test_static_mask(t);
  test_mamba_conv(t);
  test_mamba_mixer(t);
  t.print_worst();
  std::printf("%s: %d passed, %d failed\n", t.failed ? "FAILED" : "ok", t.passed, t.failed);
  return t.failed ? 1 : 0;
}
