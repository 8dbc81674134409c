// CUDA kernels of the ai.hubmoe ops against the CPU kernels (which test_cpu checks against double references), on
// the same random inputs in fp32 and fp16, and their timings at Jamba sizes. Needs a GPU; prints a report and exits
// non-zero on any mismatch.
//
// usage: test_cuda [--quick | --input-major | --dense | --mixer | --sparse]
//   --quick: correctness on small shapes only, e.g. under compute-sanitizer
//   --input-major: only the MoE input-major checks and the input-major decode timing
//   --dense: only the MoE routing-none (dense MLP), Linear and SkipRMSNorm checks, and their timings at the Jamba
//            period's sizes
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "../src/cuda_ops.h"
#include "linear_tests.h"
#include "problems.h"

using namespace testutil;
using hubmoe::DType;
namespace hc = hubmoe::cuda;

#define CK(x)                                                                                    \
  do {                                                                                           \
    cudaError_t e_ = (x);                                                                        \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(3);                                                                              \
    }                                                                                            \
  } while (0)

namespace {

struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  Dev() = default;
  explicit Dev(size_t n) : bytes(n) {
    if (n) CK(cudaMalloc(&p, n));
  }
  Dev(const void* host, size_t n) : Dev(n) {
    if (n) CK(cudaMemcpy(p, host, n, cudaMemcpyHostToDevice));
  }
  Dev(Dev&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Dev() {
    if (p) cudaFree(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  std::vector<uint8_t> host() const {
    std::vector<uint8_t> h(bytes);
    if (bytes) CK(cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost));
    return h;
  }
};

Dev dev(const Buf& b) { return Dev(b.bytes.data(), b.bytes.size()); }
Dev dev(const std::vector<float>& v) { return Dev(v.data(), v.size() * 4); }

ThreadParallel& cpu_par() {
  static ThreadParallel p(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

template <typename F>
double time_us(F&& fn, int warmup, int iters, cudaStream_t s) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, s));
  for (int i = 0; i < iters; ++i) fn();
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return 1000.0 * ms / iters;
}

// ─── SelectiveScan ────────────────────────────────────────────────────────────────────────────────────────────

struct ScanRun {
  std::vector<double> y, state;
};

ScanRun scan_cpu(const ScanProblem& p) {
  hubmoe::ScanArgs a = p.args();
  std::vector<uint8_t> y(static_cast<size_t>(a.B * a.L * a.E) * hubmoe::dtype_size(a.dtype));
  std::vector<float> st(static_cast<size_t>(a.B * a.E * a.N));
  a.y = y.data();
  a.state_out = st.data();
  hubmoe::selective_scan_cpu(a, cpu_par());
  return {read(y.data(), static_cast<size_t>(a.B * a.L * a.E), a.dtype), std::vector<double>(st.begin(), st.end())};
}

struct ScanDev {
  Dev x, dt, A, Bm, Cm, D, z, bias, state, y, state_out;
  hubmoe::ScanArgs args;
  explicit ScanDev(const ScanProblem& p)
      : x(dev(p.x)), dt(dev(p.dt)), A(dev(p.A)), Bm(dev(p.Bm)), Cm(dev(p.Cm)), D(dev(p.D)), z(dev(p.z)),
        bias(dev(p.dt_bias)), state(dev(p.state_in)) {
    args = p.args();
    y = Dev(static_cast<size_t>(args.B * args.L * args.E) * hubmoe::dtype_size(args.dtype));
    state_out = Dev(static_cast<size_t>(args.B * args.E * args.N) * 4);
    args.x = x.p;
    args.dt = dt.p;
    args.A = A.as<float>();
    args.Bm = Bm.p;
    args.Cm = Cm.p;
    args.D = D.as<float>();
    args.z = p.has_z ? z.p : nullptr;
    args.dt_bias = p.has_bias ? bias.as<float>() : nullptr;
    args.state_in = p.has_state ? state.as<float>() : nullptr;
    args.y = y.p;
    args.state_out = state_out.as<float>();
  }
  ScanRun result() const {
    auto yh = y.host();
    auto sh = state_out.host();
    return {read(yh.data(), static_cast<size_t>(args.B * args.L * args.E), args.dtype),
            read(sh.data(), static_cast<size_t>(args.B * args.E * args.N), DType::f32)};
  }
};

void scan_correctness(Tally& t, double& worst32, double& worst16) {
  struct Cfg {
    int64_t B, L, E, N;
  };
  const Cfg cfgs[] = {{2, 1, 37, 16}, {2, 7, 37, 16}, {1, 64, 300, 16}, {3, 100, 70, 5},
                      {1, 33, 64, 64}, {2, 40, 33, 200}, {1, 1, 8192, 16}};
  uint64_t seed = 11;
  for (DType dt : {DType::f32, DType::f16})
    for (const Cfg& c : cfgs)
      for (int mask : {0, 7, 5})
        for (int variant : {hc::kScanAuto, hc::kScanG4, hc::kScanG8, hc::kScanG16, hc::kScanG32}) {
          ScanProblem p = make_scan(c.B, c.L, c.E, c.N, dt, mask & 1, mask & 2, mask & 4, seed++);
          ScanRun want = scan_cpu(p);
          ScanDev d(p);
          hc::selective_scan(d.args, nullptr, variant);
          CK(cudaDeviceSynchronize());
          ScanRun got = d.result();
          const double ey = rel_err(got.y, want.y), es = rel_err(got.state, want.state);
          double& worst = dt == DType::f32 ? worst32 : worst16;
          worst = std::max(worst, std::max(ey, es));
          char what[200];
          std::snprintf(what, sizeof what, "CUDA SelectiveScan %s B=%lld L=%lld E=%lld N=%lld mask=%d %s",
                        hubmoe::dtype_name(dt), (long long)c.B, (long long)c.L, (long long)c.E, (long long)c.N, mask,
                        hc::scan_variant_name(variant));
          t.check_err(std::string(what) + " y", ey, dt == DType::f32 ? 2e-5 : 2e-3);
          t.check_err(std::string(what) + " state", es, 2e-5);
        }
}

void scan_timing(DType dt) {
  const int64_t B = 1, E = 8192, N = 16;
  for (int64_t L : {int64_t(1), int64_t(2048)}) {
    ScanProblem p = make_scan(B, L, E, N, dt, true, true, true, 77);
    ScanDev d(p);
    const size_t ts = hubmoe::dtype_size(dt);
    const double bytes = double(B * L * E) * 4 * ts + double(B * L * N) * 2 * ts + double(B * E * N) * 8;
    for (int variant : {hc::kScanAuto, hc::kScanG4, hc::kScanG8, hc::kScanG16}) {
      const double us = time_us([&] { hc::selective_scan(d.args, nullptr, variant); }, 3, L == 1 ? 200 : 20, nullptr);
      std::printf("  scan %s B=1 E=8192 N=16 L=%-5lld %-17s %9.1f us  %7.1f GB/s  %6.2f ns/step\n",
                  hubmoe::dtype_name(dt), (long long)L, hc::scan_variant_name(variant), us, bytes / us / 1e3,
                  us * 1e3 / L);
    }
  }
}

// ─── MoE ──────────────────────────────────────────────────────────────────────────────────────────────────────

struct MoeDev {
  Dev x, logits, fc1, b1, fc2, b2, s1, s2, y;
  hubmoe::MoeArgs args;
  explicit MoeDev(const MoeProblem& p)
      : x(dev(p.x)), logits(dev(p.logits)), fc1(dev(p.fc1)), b1(dev(p.fc1_bias)), fc2(dev(p.fc2)), b2(dev(p.fc2_bias)),
        s1(dev(p.fc1_scap)), s2(dev(p.fc2_scap)) {
    args = p.args();
    y = Dev(static_cast<size_t>(args.S * args.H) * hubmoe::dtype_size(args.dtype));
    args.x = x.p;
    args.logits = args.logits ? logits.p : nullptr;  // absent with routing none
    args.fc1 = fc1.p;
    args.fc1_bias = p.has_bias ? b1.p : nullptr;
    args.fc2 = fc2.p;
    args.fc2_bias = p.has_bias ? b2.p : nullptr;
    args.fc1_scap = p.fc1_scap.empty() ? nullptr : s1.as<float>();
    args.fc2_scap = p.fc2_scap.empty() ? nullptr : s2.as<float>();
    args.y = y.p;
  }
};

struct Runner {
  hc::MoeRunner r;
  Dev ws;
  void run(const hubmoe::MoeArgs& a, hc::MoePath path, cudaStream_t s = nullptr) {
    const hc::MoePath p = r.resolve(a, path);
    const size_t need = r.workspace_bytes(a, p);
    if (ws.bytes < need) ws = Dev(need);
    r.run(a, ws.p, ws.bytes, s, p);
  }
};

// Runs p on `path` (after `setup` on the runner) against the CPU kernel, keeps the worst error per type and checks
// it; the check's name is `what` with "%s" replaced by the path the runner resolved.
template <typename Setup>
void check_moe(Tally& t, const MoeProblem& p, hc::MoePath path, double& worst32, double& worst16, const std::string& what,
               Setup&& setup) {
  const DType dt = p.dtype;
  std::vector<double> want = moe_cpu_out(p.args(), cpu_par());
  MoeDev d(p);
  Runner r;
  setup(r.r);
  r.run(d.args, path);
  CK(cudaDeviceSynchronize());
  auto yh = d.y.host();
  const double err = rel_err(read(yh.data(), want.size(), dt), want);
  double& worst = dt == DType::f32 ? worst32 : worst16;
  worst = std::max(worst, err);
  std::string name = what;
  const size_t at = name.find("%s");
  if (at != std::string::npos) name.replace(at, 2, hc::moe_path_name(r.r.resolve(d.args, path)));
  t.check_err(name, err, dt == DType::f32 ? 2e-5 : 5e-3);
}

void check_moe(Tally& t, const MoeProblem& p, hc::MoePath path, double& worst32, double& worst16, const std::string& what) {
  check_moe(t, p, path, worst32, worst16, what, [](hc::MoeRunner&) {});
}

void moe_correctness(Tally& t, double& worst32, double& worst16) {
  struct Cfg {
    int64_t S, H, X, I;
    int k;
    const char* routing;
    bool renorm;
    const char* act;
    bool glu, bias;
  };
  const Cfg cfgs[] = {
      {1, 128, 8, 96, 2, "softmax", false, "silu", true, false},     {3, 128, 8, 96, 1, "softmax", false, "relu", false, true},
      {8, 256, 16, 160, 1, "sigmoid", false, "gelu_erf", false, true}, {16, 64, 4, 64, 3, "softmax", true, "gelu_tanh", true, true},
      {40, 128, 16, 96, 2, "softmax", false, "silu", true, false},   {300, 64, 8, 32, 2, "sigmoid", true, "gelu_erf", true, true},
      {5, 50, 6, 30, 2, "softmax", false, "silu", true, true},       {17, 50, 6, 30, 1, "sigmoid", false, "gelu_tanh", false, false},
      // one token: fc2 and the combine in one launch (k ≤ 2), odd sizes (scalar loads), and k = 3 (the two launches)
      {1, 50, 6, 30, 1, "sigmoid", false, "gelu_erf", false, true},  {1, 256, 16, 160, 2, "softmax", true, "silu", true, true},
      {1, 64, 4, 64, 3, "softmax", true, "gelu_tanh", true, true},   {1, 77, 8, 45, 2, "softmax", false, "relu", false, false},
  };
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::f16})
    for (const Cfg& c : cfgs)
      for (hc::MoePath path : {hc::MoePath::skinny, hc::MoePath::gemm}) {
        const DType lt = (dt == DType::f16 && (seed & 1)) ? DType::f16 : DType::f32;
        MoeProblem p = make_moe(c.S, c.H, c.X, c.I, c.k, c.routing, c.renorm, c.act, c.glu, c.bias, dt, lt, seed++);
        char what[240];
        std::snprintf(what, sizeof what, "CUDA MoE %s logits=%s path=%%s S=%lld H=%lld X=%lld I=%lld k=%d %s renorm=%d %s glu=%d bias=%d",
                      hubmoe::dtype_name(dt), hubmoe::dtype_name(lt), (long long)c.S, (long long)c.H, (long long)c.X,
                      (long long)c.I, c.k, c.routing, c.renorm, c.act, c.glu, c.bias);
        check_moe(t, p, path, worst32, worst16, what);
      }
}

// SCAP masks (fc1_scap: the masked gather on both paths; fc2_scap: the skinny fc1 epilogue and act_kernel) against
// the CPU kernel. The fc2 thresholds keep a wider margin from every |h − mode| in fp16, where the gemm path's h
// differs more from the CPU's (fc1's output is stored in fp16 before the bias and activation).
void moe_scap_correctness(Tally& t, double& worst32, double& worst16) {
  struct Cfg {
    int64_t S, H, X, I;
    int k;
    const char* routing;
    const char* act;
    bool glu, bias;
  };
  const Cfg cfgs[] = {{1, 128, 8, 96, 2, "softmax", "silu", true, false},
                      {5, 50, 6, 30, 1, "sigmoid", "gelu_erf", false, true},
                      {40, 128, 16, 64, 2, "softmax", "silu", true, true}};
  uint64_t seed = 700;
  for (DType dt : {DType::f32, DType::f16})
    for (const Cfg& c : cfgs)
      for (int masks : {3, 1, 2})  // bit 0: fc1_scap, bit 1: fc2_scap
        for (hc::MoePath path : {hc::MoePath::skinny, hc::MoePath::gemm}) {
          MoeProblem p = make_moe(c.S, c.H, c.X, c.I, c.k, c.routing, false, c.act, c.glu, c.bias, dt, DType::f32, seed);
          add_scap(p, masks & 1, masks & 2, seed++, dt == DType::f16 ? 3e-3 : 1e-4);
          char what[240];
          std::snprintf(what, sizeof what, "CUDA MoE %s path=%%s S=%lld H=%lld X=%lld I=%lld k=%d %s %s glu=%d bias=%d %s",
                        hubmoe::dtype_name(dt), (long long)c.S, (long long)c.H, (long long)c.X, (long long)c.I, c.k,
                        c.routing, c.act, c.glu, c.bias, masks == 3 ? "fc1_scap+fc2_scap" : masks == 1 ? "fc1_scap" : "fc2_scap");
          check_moe(t, p, path, worst32, worst16, what);
        }
}

// Input-major weights (layout = input_major, weights transposed by the test) on both paths against the CPU kernel
// with the same weights: S = 1, 2, 5, 16 (the skinny path's sizes) and 40; fp32 and fp16; no masks (every weight
// row is read) and both SCAP masks; odd H and I (the scalar path of the sparse kernel). `chunk` > 0 forces the
// sparse kernel's K rows per block: 700 = one 512-row stage plus 188, 96 = many chunks.
void moe_input_major_correctness(Tally& t, double& worst32, double& worst16) {
  struct Cfg {
    int64_t S, H, X, I;
    int k;
    const char* routing;
    bool renorm;
    const char* act;
    bool glu, bias;
    int chunk;
  };
  const Cfg cfgs[] = {
      {1, 128, 8, 96, 2, "softmax", false, "silu", true, false, 0},
      {2, 256, 16, 160, 1, "sigmoid", false, "gelu_erf", false, true, 0},
      {5, 50, 6, 30, 2, "softmax", false, "silu", true, true, 0},
      {16, 64, 4, 64, 3, "softmax", true, "gelu_tanh", true, true, 0},
      {16, 77, 8, 45, 2, "sigmoid", false, "relu", false, false, 0},
      {40, 128, 16, 96, 2, "softmax", false, "silu", true, false, 0},
      {1, 1100, 4, 700, 1, "softmax", false, "silu", true, true, 0},
      {5, 1100, 4, 700, 2, "softmax", false, "silu", true, true, 700},
      {16, 1100, 8, 257, 2, "sigmoid", false, "gelu_erf", false, true, 96},
  };
  uint64_t seed = 1300;
  for (DType dt : {DType::f32, DType::f16})
    for (const Cfg& c : cfgs)
      for (bool masks : {false, true})
        for (hc::MoePath path : {hc::MoePath::skinny, hc::MoePath::gemm}) {
          MoeProblem p0 = make_moe(c.S, c.H, c.X, c.I, c.k, c.routing, c.renorm, c.act, c.glu, c.bias, dt, DType::f32,
                                   seed);
          if (masks) add_scap(p0, true, true, seed, dt == DType::f16 ? 3e-3 : 1e-4);
          ++seed;
          const MoeProblem p = input_major(p0);
          char what[260];
          std::snprintf(what, sizeof what,
                        "CUDA MoE %s input_major path=%%s S=%lld H=%lld X=%lld I=%lld k=%d %s renorm=%d %s glu=%d "
                        "bias=%d%s chunk=%d",
                        hubmoe::dtype_name(dt), (long long)c.S, (long long)c.H, (long long)c.X, (long long)c.I, c.k,
                        c.routing, c.renorm, c.act, c.glu, c.bias, masks ? " fc1_scap+fc2_scap" : "", c.chunk);
          check_moe(t, p, path, worst32, worst16, what, [&](hc::MoeRunner& r) { r.set_input_major_chunk(c.chunk); });
        }
}

// Routing none (a dense MLP as one expert, no router logits) against the CPU kernel on every path: automatic (the
// two-launch fast path up to 8 tokens, then cuBLAS with x read in place and fc2 writing y), and the forced skinny
// (token tiles past 8) and gemm paths; odd H and I (the scalar loads); with SCAP masks and input-major weights,
// which take the routed skinny kernels after the dense routing kernel.
void moe_dense_correctness(Tally& t, double& worst32, double& worst16) {
  struct Cfg {
    int64_t S, H, I;
    const char* act;
    bool glu, bias;
  };
  const Cfg cfgs[] = {{1, 128, 96, "silu", true, false},     {3, 50, 30, "gelu_erf", false, true},
                      {8, 256, 160, "silu", true, true},     {9, 128, 96, "relu", false, false},
                      {16, 64, 64, "gelu_tanh", true, false}, {40, 128, 96, "silu", true, true},
                      {300, 64, 32, "gelu_erf", false, true}};
  uint64_t seed = 2300;
  for (DType dt : {DType::f32, DType::f16})
    for (const Cfg& c : cfgs)
      for (hc::MoePath path : {hc::MoePath::automatic, hc::MoePath::skinny, hc::MoePath::gemm}) {
        if (path == hc::MoePath::skinny && c.S > 40) continue;
        MoeProblem p = make_moe(c.S, c.H, 1, c.I, 1, "none", false, c.act, c.glu, c.bias, dt, DType::f32, seed++);
        char what[240];
        std::snprintf(what, sizeof what, "CUDA MoE %s routing=none path=%%s%s S=%lld H=%lld I=%lld %s glu=%d bias=%d",
                      hubmoe::dtype_name(dt), path == hc::MoePath::automatic ? " (automatic)" : "", (long long)c.S,
                      (long long)c.H, (long long)c.I, c.act, c.glu, c.bias);
        check_moe(t, p, path, worst32, worst16, what);
      }
  for (DType dt : {DType::f32, DType::f16})
    for (int64_t S : {int64_t(1), int64_t(5), int64_t(40)})
      for (int variant : {0, 1, 2})  // 0: both SCAP masks, 1: input-major, 2: both
        for (hc::MoePath path : {hc::MoePath::skinny, hc::MoePath::gemm}) {
          MoeProblem p0 = make_moe(S, 128, 1, 96, 1, "none", false, "silu", true, true, dt, DType::f32, seed);
          if (variant != 1) add_scap(p0, true, true, seed, dt == DType::f16 ? 3e-3 : 1e-4);
          ++seed;
          const MoeProblem p = variant ? input_major(p0) : p0;
          char what[240];
          std::snprintf(what, sizeof what, "CUDA MoE %s routing=none path=%%s S=%lld H=128 I=96 silu glu=1 bias=1 %s",
                        hubmoe::dtype_name(dt), (long long)S,
                        variant == 0 ? "fc1_scap+fc2_scap" : variant == 1 ? "input_major" : "input_major fc1_scap+fc2_scap");
          check_moe(t, p, path, worst32, worst16, what);
        }
}

// GPU time of one call, from a CUDA graph of 20 calls replayed (what the ORT CUDA graph replays), µs per call.
template <typename F>
double graph_time_us(F&& fn, cudaStream_t s) {
  fn();
  CK(cudaStreamSynchronize(s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < 20; ++i) fn();
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  const double us = time_us([&] { CK(cudaGraphLaunch(ge, s)); }, 3, 20, s) / 20.0;
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return us;
}

// Linear against the CPU kernel on the gemv and gemm paths and the automatic choice, fp32 and fp16, with and without
// bias (linear_shapes: 1, 2, 3 and 40 tokens, odd K, N not a multiple of 16).
void linear_correctness(Tally& t) {
  uint64_t seed = 9500;
  hc::LinearRunner runner;
  for (DType dt : {DType::f32, DType::f16})
    for (const LinearShape& sh : linear_shapes())
      for (bool bias : {false, true})
        for (hc::LinearPath path : {hc::LinearPath::automatic, hc::LinearPath::gemv, hc::LinearPath::gemm}) {
          LinearProblem p = make_linear(sh.S, sh.K, sh.N, dt, bias, seed++);
          Buf want = zeros(static_cast<size_t>(sh.S * sh.N), dt);
          hubmoe::linear_cpu(p.args(want.data()), cpu_par());
          Dev x = dev(p.x), w = dev(p.W), b = dev(p.bias), y(want.bytes.size());
          hubmoe::LinearArgs a = p.args(y.p);
          a.x = x.p, a.W = w.p, a.bias = bias ? b.p : nullptr;
          runner.run(a, nullptr, path);
          CK(cudaDeviceSynchronize());
          auto yh = y.host();
          char extra[80];
          std::snprintf(extra, sizeof extra, " CUDA path=%s%s", hc::linear_path_name(runner.resolve(a, path)),
                        path == hc::LinearPath::automatic ? " (automatic)" : "");
          t.check_err(p.name(extra), rel_err(read(yh.data(), want.size(), dt), read(want.data(), want.size(), dt)),
                      dt == DType::f32 ? 2e-5 : 2e-3);
        }
}

Dev fill(size_t n, DType t, uint64_t seed, float scale);

// Linear at the Jamba period's sizes (Mamba out_proj: K 8192 → 4096; attention o_proj: 4096 → 4096; Mamba in_proj:
// 4096 → 16384), fp16, replayed in a CUDA graph: gemv against gemm (cuBLAS chooses its own GEMV/split-K kernels
// there) at 1, 2 and 4 tokens.
void linear_timing() {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  hc::LinearRunner runner;
  const int64_t shapes[][2] = {{8192, 4096}, {4096, 4096}, {4096, 16384}};  // (K, N)
  for (const auto& kn : shapes) {
    const int64_t K = kn[0], N = kn[1];
    Dev w = fill(static_cast<size_t>(N * K), DType::f16, 3, 1.7f / 90.f);
    for (int64_t S : {int64_t(1), int64_t(2), int64_t(4)}) {
      Dev x = fill(static_cast<size_t>(S * K), DType::f16, 30 + S, 1.f), y(static_cast<size_t>(S * N) * 2);
      hubmoe::LinearArgs a;
      a.S = S, a.K = K, a.N = N, a.dtype = DType::f16, a.x = x.p, a.W = w.p, a.y = y.p;
      for (hc::LinearPath path : {hc::LinearPath::gemv, hc::LinearPath::gemm}) {
        const double us = graph_time_us([&] { runner.run(a, s, path); }, s);
        std::printf("  Linear fp16 S=%lld K=%lld N=%lld path=%-4s %7.2f us  %7.1f GB/s of weights\n", (long long)S,
                    (long long)K, (long long)N, hc::linear_path_name(path), us, double(N * K * 2) / us / 1e3);
      }
    }
  }
  CK(cudaStreamDestroy(s));
}


// A dense MLP at Jamba's size (H 4096, I 14336, SwiGLU, fp16) as MoE routing none: time per call replayed in a CUDA
// graph, and the weights' read rate, at 1, 2, 4, 8 and 16 tokens, on each path.
void moe_dense_timing() {
  const int64_t H = 4096, I = 14336, F1 = 2 * I;
  const DType dt = DType::f16;
  Dev fc1 = fill(static_cast<size_t>(F1 * H), dt, 1, 1.7f / 64.f);
  Dev fc2 = fill(static_cast<size_t>(H * I), dt, 2, 1.7f / 120.f);
  const double wbytes = 3.0 * I * H * 2;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Runner runner;
  for (int64_t S : {int64_t(1), int64_t(2), int64_t(4), int64_t(8), int64_t(16)}) {
    Dev x = fill(static_cast<size_t>(S * H), dt, 10 + S, 1.f);
    Dev y(static_cast<size_t>(S * H) * 2);
    hubmoe::MoeArgs a;
    a.S = S, a.H = H, a.X = 1, a.I = I, a.F1 = F1, a.k = 1;
    a.routing = hubmoe::Routing::none, a.act = hubmoe::Activation::silu, a.glu = true, a.dtype = dt;
    a.x = x.p, a.fc1 = fc1.p, a.fc2 = fc2.p, a.y = y.p;
    for (hc::MoePath path : {hc::MoePath::skinny, hc::MoePath::gemm}) {
      // The first call (outside the capture) sizes the runner's workspace.
      const double us = graph_time_us([&] { runner.run(a, path, s); }, s);
      std::printf("  dense MLP (MoE routing none) S=%-3lld path=%-6s %8.1f us per call  %7.1f GB/s of weights\n",
                  (long long)S, hc::moe_path_name(path), us, wbytes / us / 1e3);
    }
  }
  CK(cudaStreamDestroy(s));
}

// Deterministic pseudo-random fill on the device (the big weights would take long to make on the host).
__global__ void fill_kernel(void* p, size_t n, int f16, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f;
    if (f16)
      static_cast<__half*>(p)[i] = __float2half_rn(u * scale);
    else
      static_cast<float*>(p)[i] = u * scale;
  }
}

Dev fill(size_t n, DType t, uint64_t seed, float scale) {
  Dev d(n * hubmoe::dtype_size(t));
  fill_kernel<<<132 * 8, 256>>>(d.p, n, t == DType::f16, seed, scale);
  CK(cudaGetLastError());
  return d;
}

void moe_big(Tally& t) {
  const int64_t H = 4096, I = 14336, X = 16, F1 = 2 * I;
  const DType dt = DType::f16;
  const size_t ts = 2;
  std::printf("MoE H=%lld I=%lld X=%lld top-2 softmax SwiGLU fp16 (one expert = %.0f MB of weights)\n", (long long)H,
              (long long)I, (long long)X, double(3 * I * H * ts) / 1e6);
  Dev fc1 = fill(static_cast<size_t>(X * F1 * H), dt, 1, 1.7f / 64.f);
  Dev fc2 = fill(static_cast<size_t>(X * H * I), dt, 2, 1.7f / 120.f);
  CK(cudaDeviceSynchronize());
  // host copies for the CPU check (fc1/fc2 of every expert; the CPU reads only the routed ones)
  const auto fc1_h = fc1.host();
  const auto fc2_h = fc2.host();
  Runner runner;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int64_t S : {int64_t(1), int64_t(16), int64_t(2048)}) {
    Dev x = fill(static_cast<size_t>(S * H), dt, 10 + S, 1.f);
    Dev lg = fill(static_cast<size_t>(S * X), DType::f32, 20 + S, 3.f);
    Dev y(static_cast<size_t>(S * H) * ts);
    hubmoe::MoeArgs a;
    a.S = S, a.H = H, a.X = X, a.I = I, a.F1 = F1, a.k = 2;
    a.routing = hubmoe::Routing::softmax, a.renormalize = false, a.act = hubmoe::Activation::silu, a.glu = true;
    a.dtype = dt, a.logits_dtype = DType::f32;
    a.x = x.p, a.logits = lg.p, a.fc1 = fc1.p, a.fc2 = fc2.p, a.y = y.p;
    CK(cudaDeviceSynchronize());
    // Which experts the tokens use (for the bandwidth figure): from the CPU router.
    const auto lg_h = lg.host();
    std::vector<int> used(X, 0);
    for (int64_t tkn = 0; tkn < S; ++tkn) {
      int idx[2];
      float w[2];
      hubmoe::route_token(reinterpret_cast<const float*>(lg_h.data()) + tkn * X, X, 2, a.routing, false, idx, w);
      used[idx[0]] = used[idx[1]] = 1;
    }
    int nused = 0;
    for (int u : used) nused += u;
    const double wbytes = double(nused) * 3 * I * H * ts;
    const double flops = 2.0 * S * 2 * 3 * I * H;
    std::vector<hc::MoePath> paths;
    if (S <= 16) paths.push_back(hc::MoePath::skinny);
    paths.push_back(hc::MoePath::gemm);
    for (hc::MoePath path : paths) {
      runner.run(a, path, s);
      CK(cudaStreamSynchronize(s));
      // correctness vs the CPU kernel on up to 6 tokens (tokens are independent)
      const int64_t nt = std::min<int64_t>(S, 6);
      const auto x_h = x.host();
      const auto y_h = y.host();
      hubmoe::MoeArgs c = a;
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < nt; ++i) rows.push_back(i * (S / nt));
      std::vector<uint8_t> xs(static_cast<size_t>(nt * H) * ts), ls(static_cast<size_t>(nt * X) * 4);
      std::vector<double> got;
      for (int64_t i = 0; i < nt; ++i) {
        std::memcpy(xs.data() + i * H * ts, x_h.data() + rows[i] * H * ts, H * ts);
        std::memcpy(ls.data() + i * X * 4, lg_h.data() + rows[i] * X * 4, X * 4);
        auto r = read(y_h.data() + rows[i] * H * ts, static_cast<size_t>(H), dt);
        got.insert(got.end(), r.begin(), r.end());
      }
      c.S = nt, c.x = xs.data(), c.logits = ls.data(), c.fc1 = fc1_h.data(), c.fc2 = fc2_h.data();
      const double err = rel_err(got, moe_cpu_out(c, cpu_par()));
      char what[160];
      std::snprintf(what, sizeof what, "CUDA MoE big S=%lld path=%s vs CPU (%lld tokens)", (long long)S,
                    hc::moe_path_name(path), (long long)nt);
      t.check_err(what, err, 5e-3);
      const int iters = S == 1 ? 100 : S == 16 ? 30 : 10;
      const double us = time_us([&] { runner.run(a, path, s); }, 2, iters, s);
      std::printf("  S=%-5lld %-6s %9.1f us  experts used %2d  weights %7.1f MB  %7.1f GB/s  %7.1f TFLOP/s  err vs CPU %.2e\n",
                  (long long)S, hc::moe_path_name(path), us, nused, wbytes / 1e6, wbytes / us / 1e3, flops / us / 1e6,
                  err);
    }
  }
  // The cost of the gemm path's host sync: a 64-byte device→host copy plus stream synchronisation.
  {
    Dev d(64);
    int* pinned;
    CK(cudaMallocHost(reinterpret_cast<void**>(&pinned), 64));
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) {
      CK(cudaMemcpyAsync(pinned, d.p, 64, cudaMemcpyDeviceToHost, s));
      CK(cudaStreamSynchronize(s));
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 200;
    std::printf("  host sync round trip (64 B D2H copy + cudaStreamSynchronize on an idle stream): %.1f us\n", us);
    CK(cudaFreeHost(pinned));
  }
  CK(cudaStreamDestroy(s));
}

// [X, R, K] → [X, K, R] per expert (output-major weights to input-major), through 32×32 tiles in shared memory.
template <typename T>
__global__ void transpose_kernel(const T* in, T* out, int R, int K) {
  __shared__ T tile[32][33];
  const size_t base = static_cast<size_t>(blockIdx.z) * R * K;
  const int k0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int r = r0 + i, k = k0 + threadIdx.x;
    if (r < R && k < K) tile[i][threadIdx.x] = in[base + static_cast<size_t>(r) * K + k];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int k = k0 + i, r = r0 + threadIdx.x;
    if (r < R && k < K) out[base + static_cast<size_t>(k) * R + r] = tile[threadIdx.x][i];
  }
}

Dev transpose_experts_dev(const Dev& w, int64_t X, int64_t R, int64_t K) {
  Dev out(w.bytes);
  const dim3 grid(static_cast<unsigned>((K + 31) / 32), static_cast<unsigned>((R + 31) / 32), static_cast<unsigned>(X));
  transpose_kernel<__half><<<grid, dim3(32, 8)>>>(w.as<__half>(), out.as<__half>(), static_cast<int>(R),
                                                  static_cast<int>(K));
  CK(cudaGetLastError());
  return out;
}

// The quantile q of |v| (q in (0, 1)): the threshold that zeroes about that fraction of v.
float abs_quantile(std::vector<float> v, double q) {
  for (auto& x : v) x = std::fabs(x);
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

// Decode (S = 1) at Jamba's MoE sizes, fp16, top-2 SwiGLU: today's output-major skinny path against the input-major
// sparse kernel, with no masks (dense: every weight row read) and with both SCAP masks at about 50 % and 40 % zeros
// (mode 0; thresholds: quantiles of |x| for fc1_scap and of each routed expert's |h| for fc2_scap). Each input-major
// result is compared with the output-major one of the same masks.
void moe_input_major_timing(Tally& t) {
  const int64_t H = 4096, I = 14336, X = 16, F1 = 2 * I, S = 1;
  const DType dt = DType::f16;
  const size_t ts = 2;
  std::printf("MoE decode S=1, H=%lld I=%lld X=%lld top-2 softmax SwiGLU fp16: output-major skinny vs input-major "
              "sparse skinny\n", (long long)H, (long long)I, (long long)X);
  Dev fc1 = fill(static_cast<size_t>(X * F1 * H), dt, 1, 1.7f / 64.f);
  Dev fc2 = fill(static_cast<size_t>(X * H * I), dt, 2, 1.7f / 120.f);
  Dev fc1_im = transpose_experts_dev(fc1, X, F1, H);
  Dev fc2_im = transpose_experts_dev(fc2, X, H, I);
  Dev x = fill(static_cast<size_t>(S * H), dt, 11, 1.f);
  Dev lg = fill(static_cast<size_t>(S * X), DType::f32, 21, 3.f);
  Dev y_om(static_cast<size_t>(S * H) * ts), y_im(static_cast<size_t>(S * H) * ts);
  CK(cudaDeviceSynchronize());
  hubmoe::MoeArgs a;
  a.S = S, a.H = H, a.X = X, a.I = I, a.F1 = F1, a.k = 2;
  a.routing = hubmoe::Routing::softmax, a.renormalize = false, a.act = hubmoe::Activation::silu, a.glu = true;
  a.dtype = dt, a.logits_dtype = DType::f32;
  a.x = x.p, a.logits = lg.p;
  hubmoe::MoeArgs om = a, im = a;
  om.fc1 = fc1.p, om.fc2 = fc2.p, om.y = y_om.p;
  im.fc1 = fc1_im.p, im.fc2 = fc2_im.p, im.y = y_im.p, im.layout = hubmoe::MoeLayout::input_major;

  // The routed experts and, for the masks, x and each routed expert's h (from x masked with fc1_scap) on the host.
  const auto lg_h = lg.host();
  int idx[2];
  float wts[2];
  hubmoe::route_token(reinterpret_cast<const float*>(lg_h.data()), X, 2, a.routing, false, idx, wts);
  const std::vector<double> xv = read(x.host().data(), static_cast<size_t>(H), dt);
  const std::vector<float> xf(xv.begin(), xv.end());
  const auto fc1_h = fc1.host();
  auto hidden = [&](int e, float t1) {
    std::vector<float> xs(xf);
    for (auto& v : xs) v = std::fabs(v) > t1 ? v : 0.f;
    std::vector<float> h(static_cast<size_t>(I));
    const uint16_t* W = reinterpret_cast<const uint16_t*>(fc1_h.data()) + static_cast<size_t>(e) * F1 * H;
    cpu_par().for_range(static_cast<size_t>(I), 256, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        float g = 0.f, u = 0.f;
        const uint16_t* wg = W + i * H;
        const uint16_t* wu = W + (static_cast<size_t>(I) + i) * H;
        for (int64_t c = 0; c < H; ++c) {
          if (xs[c] == 0.f) continue;
          g += xs[c] * hubmoe::half_to_float(wg[c]);
          u += xs[c] * hubmoe::half_to_float(wu[c]);
        }
        h[i] = g / (1.f + std::exp(-g)) * u;
      }
    });
    return h;
  };

  Runner r_om, r_im;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const double wbytes = 2.0 * 3 * I * H * ts;  // two experts' weights
  auto time_call = [&](Runner& r, const hubmoe::MoeArgs& args) {
    r.run(args, hc::MoePath::skinny, s);
    CK(cudaStreamSynchronize(s));
    return time_us([&] { r.run(args, hc::MoePath::skinny, s); }, 5, 100, s);
  };
  const double t_om = time_call(r_om, om);
  std::printf("  output-major skinny (no masks)        %8.1f us  %6.2f TB/s of %.0f MB\n", t_om, wbytes / t_om * 1e-6,
              wbytes / 1e6);
  {
    const double t_im = time_call(r_im, im);
    const double err = rel_err(read(y_im.host().data(), H, dt), read(y_om.host().data(), H, dt));
    t.check_err("CUDA MoE big input_major S=1 no masks vs output_major", err, 5e-3);
    std::printf("  input-major sparse (no masks, dense)  %8.1f us  %6.2f TB/s  speed-up %.2fx  err vs output-major %.1e\n",
                t_im, wbytes / t_im * 1e-6, t_om / t_im, err);
  }
  for (double zeros : {0.5, 0.4}) {
    const float t1 = abs_quantile(xf, zeros);
    std::vector<float> sc1(static_cast<size_t>(2 * X), 0.f), sc2(static_cast<size_t>(2 * X), 0.f);
    for (int64_t e = 0; e < X; ++e) sc1[2 * e + 1] = t1, sc2[2 * e + 1] = -1.f;
    size_t kept1 = 0, kept2 = 0;
    for (float v : xf) kept1 += std::fabs(v) > t1;
    for (int j = 0; j < 2; ++j) {
      const std::vector<float> h = hidden(idx[j], t1);
      const float t2 = abs_quantile(h, zeros);
      sc2[2 * idx[j] + 1] = t2;
      for (float v : h) kept2 += std::fabs(v) > t2;
    }
    Dev s1 = dev(sc1), s2 = dev(sc2);
    hubmoe::MoeArgs om_m = om, im_m = im;
    om_m.fc1_scap = im_m.fc1_scap = s1.as<float>();
    om_m.fc2_scap = im_m.fc2_scap = s2.as<float>();
    const double t_om_m = time_call(r_om, om_m);
    const double t_im_m = time_call(r_im, im_m);
    // Loose: an element of h within an fp16 rounding of its threshold may be kept by one kernel and not the other.
    const double err = rel_err(read(y_im.host().data(), H, dt), read(y_om.host().data(), H, dt));
    char what[160];
    std::snprintf(what, sizeof what, "CUDA MoE big input_major S=1 masks %.0f %% vs output_major (loose)", zeros * 100);
    t.check_err(what, err, 5e-2);
    const double f1 = 1.0 - double(kept1) / H, f2 = 1.0 - double(kept2) / (2.0 * I);
    const double read_bytes = 2.0 * ts * H * (1.0 - f1) * F1 + 2.0 * ts * I * (1.0 - f2) * H;
    std::printf("  masks ~%.0f %% zeros (fc1 input %.1f %%, fc2 input %.1f %% zero): output-major %8.1f us | "
                "input-major %8.1f us (%.0f MB read, %.2f TB/s)  speed-up %.2fx  err vs output-major %.1e\n",
                zeros * 100, f1 * 100, f2 * 100, t_om_m, t_im_m, read_bytes / 1e6, read_bytes / t_im_m * 1e-6,
                t_om / t_im_m, err);
  }
  CK(cudaStreamDestroy(s));
}

// Bandwidth ceiling: a device-to-device copy.
void copy_bandwidth() {
  const size_t n = size_t(2) << 30;
  Dev a(n), b(n);
  CK(cudaMemset(a.p, 1, n));
  const double us = time_us([&] { CK(cudaMemcpyAsync(b.p, a.p, n, cudaMemcpyDeviceToDevice, nullptr)); }, 2, 10, nullptr);
  std::printf("device copy: %.0f GB/s (bytes read + written)\n", 2.0 * n / us / 1e3);
}

}  // namespace

#include "sparse_linear_cuda.h"
#include "next_token_tests.h"
#include "split_rms_norm_tests.h"
#include "skip_rms_norm_tests.h"
#include "static_attention_mask_tests.h"
#include "mamba_conv_tests.h"
#include "mamba_mixer_tests.h"

namespace {

// NextToken on CUDA against the definition, at the CPU test's shapes and at decode sizes (vocab 65536, batch 16).
void next_token_correctness(Tally& t) {
  uint64_t seed = 7500;
  std::vector<NextTokenShape> shapes(std::begin(kNextTokenShapes), std::end(kNextTokenShapes));
  shapes.push_back({16, 1, 65536, 65024});
  shapes.push_back({1, 2, 65536, 65536});
  for (DType dt : {DType::f32, DType::f16})
    for (const NextTokenShape& s : shapes) {
      NextTokenProblem p = make_next_token(s.B, s.T, s.V, s.vocab, dt, seed++);
      Dev l = dev(p.logits), n(static_cast<size_t>(std::max<int64_t>(1, p.B)) * 8);
      hubmoe::NextTokenArgs a = p.args(static_cast<int64_t*>(n.p));
      a.logits = l.p;
      hubmoe::cuda::next_token(a, nullptr);
      CK(cudaDeviceSynchronize());
      std::vector<int64_t> got(static_cast<size_t>(p.B));
      if (p.B) CK(cudaMemcpy(got.data(), n.p, got.size() * 8, cudaMemcpyDeviceToHost));
      t.check(got == next_token_ref(p), p.name(" CUDA"), 1, 0);
    }
}

// SplitRMSNorm on CUDA against the definition, at the CPU test's shapes and at Jamba-v0.1's (dt_rank 256, d_state 16)
// for a 2048-token prefill and a batch-16 decode step.
void split_rms_correctness(Tally& t) {
  uint64_t seed = 8500;
  std::vector<SplitRmsShape> shapes = split_rms_shapes();
  shapes.push_back({2048, {256, 16, 16}, 1e-6f});
  shapes.push_back({16, {256, 16, 16}, 1e-6f});
  for (DType dt : {DType::f32, DType::f16})
    for (const SplitRmsShape& s : shapes) {
      SplitRmsProblem p = make_split_rms(s.rows, s.lens, dt, s.eps, seed++);
      Dev x = dev(p.x);
      std::vector<Dev> w, y;
      void* yp[hubmoe::kSplitRmsMaxGroups] = {};
      for (int g = 0; g < p.G; ++g) {
        w.push_back(dev(p.w[g]));
        y.emplace_back(static_cast<size_t>(std::max<int64_t>(1, p.rows * p.len[g])) * hubmoe::dtype_size(dt));
        yp[g] = y[g].p;
      }
      hubmoe::SplitRmsNormArgs a = p.args(yp);
      a.x = x.p;
      for (int g = 0; g < p.G; ++g) a.w[g] = w[g].p;
      hubmoe::cuda::split_rms_norm(a, nullptr);
      CK(cudaDeviceSynchronize());
      double err = 0;
      for (int g = 0; g < p.G; ++g) {
        std::vector<uint8_t> h = y[g].host();
        err = std::max(err, rel_err(read(h.data(), static_cast<size_t>(p.rows * p.len[g]), dt), split_rms_ref(p, g), 1e-3));
      }
      t.check_err(p.name(" CUDA"), err, split_rms_tol(dt));
    }
}

// SkipRMSNorm on CUDA against the CPU kernel, whose bytes it must give (both add the squares in skip_rms_norm.h's
// order): the CPU test's shapes, every cached width (D = 8192: 4 or 8 groups a thread; 16384: 8 in fp16, streamed in
// fp32), streamed rows (20000, 40000; 20001: odd), 300 rows of 4096; without skip, with skip, with skip and sum; fp32
// and fp16; each again with every pointer one element off 16-byte alignment (the element path).
void skip_rms_correctness(Tally& t) {
  uint64_t seed = 8800;
  std::vector<SkipRmsShape> shapes = skip_rms_shapes();
  for (int64_t D : {8192, 16384, 20000, 20001, 40000}) shapes.push_back({3, D, 1e-6f});
  shapes.push_back({300, 4096, 1e-6f});
  for (DType dt : {DType::f32, DType::f16})
    for (const SkipRmsShape& s : shapes)
      for (int mode = 0; mode < 3; ++mode)  // 0: no skip; 1: skip, y only; 2: skip and sum
        for (bool off : {false, true}) {
          const SkipRmsProblem p = make_skip_rms(s.rows, s.D, dt, mode > 0, s.eps, seed++);
          const SkipRmsOut want = run_skip_rms_cpu(p, cpu_par(), mode == 2);
          const size_t shift = off ? hubmoe::dtype_size(dt) : 0, bytes = want.y.bytes.size();
          auto put = [&](const Buf& b) {
            Dev d(b.bytes.size() + 16);
            if (!b.bytes.empty()) CK(cudaMemcpy(static_cast<uint8_t*>(d.p) + shift, b.bytes.data(), b.bytes.size(), cudaMemcpyHostToDevice));
            return d;
          };
          Dev x = put(p.x), k = put(p.skip), w = put(p.w), y(bytes + 16), sum(bytes + 16);
          auto at = [&](const Dev& d) { return static_cast<void*>(static_cast<uint8_t*>(d.p) + shift); };
          hubmoe::SkipRmsNormArgs a = p.args(at(y), mode == 2 ? at(sum) : nullptr);
          a.x = at(x), a.skip = mode > 0 ? at(k) : nullptr, a.w = at(w);
          hubmoe::cuda::skip_rms_norm(a, nullptr);
          CK(cudaDeviceSynchronize());
          const std::vector<uint8_t> hy = y.host(), hs = sum.host();
          int differ = 0;
          for (size_t i = 0; i < bytes; ++i) differ += hy[shift + i] != want.y.bytes[i];
          if (mode == 2)
            for (size_t i = 0; i < bytes; ++i) differ += hs[shift + i] != want.sum.bytes[i];
          t.check_err(p.name(mode == 2 ? " sum" : "") + (off ? " CUDA unaligned" : " CUDA") + ": bytes unlike the CPU kernel's",
                      differ, 0);
        }
}

// SkipRMSNorm at Jamba's hidden size (D = 4096, fp16) at one and 16 rows: with skip and sum (the fused graph's block
// and final norms) and without (its first norm); µs per call in a replayed CUDA graph.
void skip_rms_timing() {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t D = 4096;
  Dev w = fill(static_cast<size_t>(D), DType::f16, 5, 1.f);
  for (int64_t rows : {int64_t(1), int64_t(16)}) {
    const size_t n = static_cast<size_t>(rows * D);
    Dev x = fill(n, DType::f16, 6, 1.f), k = fill(n, DType::f16, 7, 1.f), y(n * 2), sum(n * 2);
    for (bool skip : {true, false}) {
      hubmoe::SkipRmsNormArgs a;
      a.rows = rows, a.D = D, a.dtype = DType::f16, a.x = x.p, a.skip = skip ? k.p : nullptr, a.w = w.p, a.y = y.p;
      a.sum = skip ? sum.p : nullptr;
      const double us = graph_time_us([&] { hubmoe::cuda::skip_rms_norm(a, s); }, s);
      std::printf("  SkipRMSNorm fp16 rows=%-2lld D=%lld %-10s %5.2f us\n", (long long)rows, (long long)D,
                  skip ? "skip + sum" : "no skip", us);
    }
  }
  CK(cudaStreamDestroy(s));
}

// StaticAttentionMask on CUDA against the definition: the CPU test's problems and a Jamba decode step and prefill
// (4 query heads per KV head, a 4096-slot window, batch 16 / 1).
void static_mask_correctness(Tally& t) {
  std::vector<StaticMaskShape> shapes(std::begin(kStaticMaskShapes), std::end(kStaticMaskShapes));
  shapes.push_back({16, 4096, 1, 2100, 4});
  shapes.push_back({1, 4096, 2048, 0, 4});
  for (const StaticMaskShape& sh : shapes)
    for (int outs : {3, 1}) {
      StaticMaskProblem p = make_static_mask(sh.B, sh.S, sh.T, sh.first, sh.groups);
      const StaticMaskWant want = static_mask_ref(p);
      Dev m(p.mask.data(), p.mask.size() * 8), pos(p.position.data(), p.position.size() * 8);
      Dev bias(want.bias.size() * 4), is_new(static_cast<size_t>(p.S)), source(static_cast<size_t>(p.S) * 8);
      hubmoe::StaticMaskArgs a = p.args(bias.as<float>(), outs == 3 ? is_new.as<bool>() : nullptr, outs == 3 ? source.as<int64_t>() : nullptr);
      a.mask = m.as<int64_t>(), a.position = pos.as<int64_t>();
      hubmoe::cuda::static_mask(a, nullptr);
      CK(cudaDeviceSynchronize());
      std::vector<float> b(want.bias.size());
      CK(cudaMemcpy(b.data(), bias.p, b.size() * 4, cudaMemcpyDeviceToHost));
      bool ok = b == want.bias;
      if (outs == 3) {
        std::vector<uint8_t> n = is_new.host();
        std::vector<int64_t> src(static_cast<size_t>(p.S));
        CK(cudaMemcpy(src.data(), source.p, src.size() * 8, cudaMemcpyDeviceToHost));
        ok = ok && n == want.is_new && src == want.source;
      }
      t.check(ok, p.name(outs == 3 ? " CUDA" : " CUDA, bias only"), ok ? 0 : 1, 0);
    }
}

// MambaConv on CUDA against the definition: the CPU test's problems, a Jamba decode step (E = 8192, batch 16) and a
// prefill (2048 positions, E = 2944: BlackMamba-2.8B's d_inner).
void mamba_conv_correctness(Tally& t) {
  uint64_t seed = 9500;
  std::vector<MambaConvShape> shapes = mamba_conv_shapes();
  shapes.push_back({16, 1, 8192, 4, true});
  shapes.push_back({1, 2048, 2944, 4, true});
  for (DType dt : {DType::f32, DType::f16})
    for (const MambaConvShape& s : shapes) {
      MambaConvProblem p = make_mamba_conv(s.B, s.T, s.E, s.K, s.bias, dt, seed++);
      const MambaConvWant want = mamba_conv_ref(p);
      const size_t ts = hubmoe::dtype_size(dt);
      Dev xz = dev(p.xz), mask = dev(p.mask), w = dev(p.weight), b = dev(p.bias), st = dev(p.state);
      Dev u(std::max<size_t>(1, want.u.size()) * ts), z(std::max<size_t>(1, want.z.size()) * ts), so(std::max<size_t>(1, want.state.size()) * ts);
      hubmoe::MambaConvArgs a = p.args(u.p, z.p, so.p);
      a.xz = xz.p, a.mask = mask.p, a.weight = w.p, a.bias = s.bias ? b.p : nullptr, a.state = st.p;
      hubmoe::cuda::mamba_conv(a, nullptr);
      CK(cudaDeviceSynchronize());
      std::vector<uint8_t> hu = u.host(), hz = z.host(), hs = so.host();
      const double err = std::max({rel_err(read(hu.data(), want.u.size(), dt), want.u, 1e-3), rel_err(read(hz.data(), want.z.size(), dt), want.z, 1e-3),
                                   rel_err(read(hs.data(), want.state.size(), dt), want.state, 1e-3)});
      t.check_err(p.name(" CUDA"), err, mamba_conv_tol(dt));
    }
}

// MambaMixer on CUDA against the definition: the CPU test's problems and decode rows at real sizes (Jamba-v0.1:
// E = 8192, N = 16, dt_rank 256 with norms, batch 1, 3 and 16; BlackMamba-2.8B: E = 2944, dt_rank 92, no norms), each
// through the decode path where it applies and through the chain; batch 5 (past the decode path) and a 64-token
// prefill. The decode path must give the same bytes when run twice.
struct MixerDev {
  Dev xz, mask, cw, cb, cs, xp, dp, db, A, D, ss, n0, n1, n2, y, cs_out, ss_out;
  hubmoe::MambaMixerArgs args;
  explicit MixerDev(const MambaMixerProblem& p)
      : xz(dev(p.conv.xz)), mask(dev(p.conv.mask)), cw(dev(p.conv.weight)), cb(dev(p.conv.bias)), cs(dev(p.conv.state)),
        xp(dev(p.x_proj)),
        dp(dev(p.dt_proj)), db(dev(p.dt_bias)), A(dev(p.A)), D(dev(p.D)), ss(dev(p.ssm_state)), n0(dev(p.norm[0])),
        n1(dev(p.norm[1])), n2(dev(p.norm[2])),
        y(std::max<size_t>(1, p.s.B * p.s.T * p.s.E) * hubmoe::dtype_size(p.dtype)),
        cs_out(std::max<size_t>(1, p.s.B * p.s.E * (p.s.K - 1)) * hubmoe::dtype_size(p.dtype)),
        ss_out(std::max<size_t>(1, p.s.B * p.s.E * p.s.N) * 4) {
    args = p.args(y.p, cs_out.p, ss_out.as<float>());
    args.xz = xz.p, args.mask = mask.p, args.conv_weight = cw.p, args.conv_bias = p.s.conv_bias ? cb.p : nullptr;
    args.conv_state = cs.p, args.x_proj = xp.p, args.dt_proj = dp.p, args.dt_bias = p.s.dt_bias ? db.as<float>() : nullptr;
    args.A = A.as<float>(), args.D = D.as<float>(), args.ssm_state = ss.as<float>();
    const void* n[3] = {n0.p, n1.p, n2.p};
    for (int g = 0; g < 3; ++g) args.norm[g] = p.s.norms ? n[g] : nullptr;
  }
};

std::vector<MambaMixerShape> mamba_mixer_cuda_shapes() {
  std::vector<MambaMixerShape> v = mamba_mixer_shapes();
  v.push_back({1, 1, 8192, 4, 16, 256, true, true, true});    // Jamba-v0.1 decode
  v.push_back({3, 1, 8192, 4, 16, 256, true, true, true});    // batch 3
  v.push_back({16, 1, 8192, 4, 16, 256, true, true, true});   // batch 16 (the chain)
  v.push_back({1, 1, 2944, 4, 16, 92, false, true, true});    // BlackMamba-2.8B decode
  v.push_back({4, 1, 2944, 4, 16, 92, false, true, true});
  v.push_back({5, 1, 1024, 4, 16, 64, true, true, true});     // past the decode path's rows: the chain
  v.push_back({1, 64, 2944, 4, 16, 92, false, true, true});   // prefill
  v.push_back({2, 1, 1000, 4, 64, 40, true, false, true});    // E not a multiple of the chunks, N = 64
  v.push_back({1, 1, 640, 4, 64, 1024, true, true, true});    // wide x_proj (J = 1152): one row group, 16-byte loads
  return v;
}

void mamba_mixer_correctness(Tally& t) {
  uint64_t seed = 9800;
  hc::MambaMixerRunner runner;
  for (DType dt : {DType::f32, DType::f16})
    for (const MambaMixerShape& s : mamba_mixer_cuda_shapes()) {
      MambaMixerProblem p = make_mamba_mixer(s, dt, seed++);
      const MambaMixerWant want = mamba_mixer_ref(p);
      MixerDev d(p);
      const bool decode = hc::MambaMixerRunner::decode_path(d.args);
      for (bool allow : {true, false}) {
        if (allow == false && !decode) continue;  // the chain was the only path
        const size_t bytes = runner.workspace_bytes(d.args, allow);
        Dev ws(std::max<size_t>(bytes, 1));
        std::vector<uint8_t> first;
        for (int rep = 0; rep < (allow && decode ? 2 : 1); ++rep) {
          CK(cudaMemset(d.y.p, 0, d.y.bytes));
          runner.run(d.args, ws.p, bytes, nullptr, allow);
          CK(cudaDeviceSynchronize());
          std::vector<uint8_t> hy = d.y.host(), hc_ = d.cs_out.host(), hs = d.ss_out.host();
          if (rep == 1) {
            std::vector<uint8_t> all = hy;
            all.insert(all.end(), hs.begin(), hs.end());
            t.check(all == first, p.name(" CUDA decode path, run twice: same bytes"), all == first ? 0 : 1, 0);
            break;
          }
          first = hy;
          first.insert(first.end(), hs.begin(), hs.end());
          std::vector<float> ssf(want.ssm_state.size());
          std::memcpy(ssf.data(), hs.data(), ssf.size() * 4);
          const double err = std::max({rel_err(read(hy.data(), want.y.size(), dt), want.y, 1e-3),
                                       rel_err(read(hc_.data(), want.conv_state.size(), dt), want.conv_state, 1e-3),
                                       rel_err(std::vector<double>(ssf.begin(), ssf.end()), want.ssm_state, 1e-3)});
          t.check_err(p.name(decode && allow ? " CUDA decode path" : " CUDA chain"), err, mamba_mixer_tol(dt));
        }
      }
    }
}

// Decode step of the mixer at Jamba-v0.1's and BlackMamba-2.8B's sizes: the decode path against the chain of the
// separate ops' kernels and cuBLAS (what the fused graph ran before MambaMixer), fp16, in CUDA graphs.
void mamba_mixer_timing() {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  hc::MambaMixerRunner runner;
  std::printf("MambaMixer decode, fp16, µs per call in a replayed CUDA graph (decode path / chain):\n");
  const MambaMixerShape shapes[] = {{1, 1, 8192, 4, 16, 256, true, true, true}, {4, 1, 8192, 4, 16, 256, true, true, true},
                                    {1, 1, 2944, 4, 16, 92, false, true, true}, {4, 1, 2944, 4, 16, 92, false, true, true}};
  for (const MambaMixerShape& sh : shapes) {
    MambaMixerProblem p = make_mamba_mixer(sh, DType::f16, 42);
    MixerDev d(p);
    double us[2];
    for (int allow = 1; allow >= 0; --allow) {
      const size_t bytes = runner.workspace_bytes(d.args, allow);
      Dev ws(std::max<size_t>(bytes, 1));
      us[1 - allow] = graph_time_us([&] { runner.run(d.args, ws.p, bytes, s, allow); }, s);
    }
    std::printf("  B=%lld E=%lld N=%lld R=%lld%s: %.1f / %.1f us (%.2fx)\n", (long long)sh.B, (long long)sh.E,
                (long long)sh.N, (long long)sh.R, sh.norms ? " norms" : "", us[0], us[1], us[1] / us[0]);
  }
  CK(cudaStreamDestroy(s));
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  if (argc > 1 && std::strcmp(argv[1], "--info") == 0) return 0;
  std::fflush(stdout);
  std::string why;
  std::printf("cuBLAS: %s\n", hc::cublas_available(&why) ? "loaded" : why.c_str());
  Tally t;
  double s32 = 0, s16 = 0, m32 = 0, m16 = 0;
  auto report = [&] {
    std::printf("%s: %d passed, %d failed\n", t.failed ? "FAILED" : "ok", t.passed, t.failed);
    return t.failed ? 1 : 0;
  };
  if (argc > 1 && std::strcmp(argv[1], "--sparse") == 0) {
    double l32 = 0, l16 = 0;
    sparse_correctness(t, l32, l16);
    std::printf("max error vs CPU kernels: SparseLinear fp32 %.2e fp16 %.2e\n", l32, l16);
    sparse_timing();
    next_token_correctness(t);
    split_rms_correctness(t);
    static_mask_correctness(t);
    mamba_conv_correctness(t);
    mamba_mixer_correctness(t);
    return report();
  }
  if (argc > 1 && std::strcmp(argv[1], "--mixer") == 0) {
    mamba_mixer_correctness(t);
    mamba_mixer_timing();
    return report();
  }
  if (argc > 1 && std::strcmp(argv[1], "--dense") == 0) {
    moe_dense_correctness(t, m32, m16);
    std::printf("max error vs CPU kernels: MoE routing none fp32 %.2e fp16 %.2e\n", m32, m16);
    linear_correctness(t);
    skip_rms_correctness(t);
    moe_dense_timing();
    linear_timing();
    skip_rms_timing();
    return report();
  }
  if (argc > 1 && std::strcmp(argv[1], "--input-major") == 0) {
    moe_input_major_correctness(t, m32, m16);
    std::printf("max error vs CPU kernels: MoE input-major fp32 %.2e fp16 %.2e\n", m32, m16);
    moe_input_major_timing(t);
    return report();
  }
  scan_correctness(t, s32, s16);
  moe_correctness(t, m32, m16);
  moe_scap_correctness(t, m32, m16);
  moe_input_major_correctness(t, m32, m16);
  moe_dense_correctness(t, m32, m16);
  linear_correctness(t);
  double l32 = 0, l16 = 0;
  sparse_correctness(t, l32, l16);
  next_token_correctness(t);
  split_rms_correctness(t);
  skip_rms_correctness(t);
  static_mask_correctness(t);
  mamba_conv_correctness(t);
  mamba_mixer_correctness(t);
  std::printf("max error vs CPU kernels: SparseLinear fp32 %.2e fp16 %.2e\n", l32, l16);
  std::printf("max error vs CPU kernels: SelectiveScan fp32 %.2e fp16 %.2e; MoE fp32 %.2e fp16 %.2e\n", s32, s16, m32,
              m16);
  if (!quick) {
    copy_bandwidth();
    std::printf("SelectiveScan timings (inputs z, dt_bias, state_in present):\n");
    scan_timing(DType::f16);
    scan_timing(DType::f32);
    moe_big(t);
    moe_input_major_timing(t);
    sparse_timing();
    mamba_mixer_timing();
  }
  return report();
}
