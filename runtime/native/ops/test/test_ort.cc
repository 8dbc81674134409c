// End-to-end test of libhubmoe_ops inside ONNX Runtime (CPU execution provider): models with ai.hubmoe nodes are
// written in memory, loaded with the custom-op library registered, run, and compared with the double-precision
// references. Checks registration, optional inputs (absent in the middle and omitted at the end), float and
// float16 kernels, output type inference for intermediate values, symbolic dims, attributes and error reporting.
//
// usage: test_ort <libonnxruntime.so.1> <libhubmoe_ops.so>
#include <dlfcn.h>

#include <cstdio>
#include <functional>

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include "onnx_writer.h"
#include "problems.h"
#include "next_token_tests.h"
#include "linear_tests.h"
#include "split_rms_norm_tests.h"
#include "skip_rms_norm_tests.h"
#include "static_attention_mask_tests.h"
#include "mamba_conv_tests.h"
#include "mamba_mixer_tests.h"
#include "sparse_linear_tests.h"

using namespace testutil;
using hubmoe::DType;

namespace {

Ort::Env* g_env = nullptr;
const char* g_ops_lib = nullptr;

int elem(DType t) { return t == DType::f32 ? onnxw::FLOAT : onnxw::FLOAT16; }
ONNXTensorElementDataType ort_elem(DType t) {
  return t == DType::f32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}

struct Feed {
  std::string name;
  DType t;
  std::vector<int64_t> dims;
  const void* data;
};

Ort::Session make_session(const std::string& bytes, bool quiet = false) {
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(2);
  if (quiet) so.SetLogSeverityLevel(ORT_LOGGING_LEVEL_FATAL);  // errors expected by the test
  so.RegisterCustomOpsLibrary(g_ops_lib);
  return Ort::Session(*g_env, bytes.data(), bytes.size(), so);
}

std::vector<Ort::Value> run(Ort::Session& s, const std::vector<Feed>& feeds, const std::vector<std::string>& outs,
                            bool quiet = false) {
  Ort::MemoryInfo mi = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> vals;
  std::vector<const char*> names;
  for (const auto& f : feeds) {
    size_t n = 1;
    for (int64_t d : f.dims) n *= static_cast<size_t>(d);
    vals.push_back(Ort::Value::CreateTensor(mi, const_cast<void*>(f.data), n * hubmoe::dtype_size(f.t), f.dims.data(),
                                            f.dims.size(), ort_elem(f.t)));
    names.push_back(f.name.c_str());
  }
  std::vector<const char*> onames;
  for (const auto& o : outs) onames.push_back(o.c_str());
  Ort::RunOptions ro;
  if (quiet) ro.SetRunLogSeverityLevel(ORT_LOGGING_LEVEL_FATAL);  // errors expected by the test
  return s.Run(ro, names.data(), vals.data(), vals.size(), onames.data(), onames.size());
}

std::vector<double> values(const Ort::Value& v) {
  auto info = v.GetTensorTypeAndShapeInfo();
  const DType t = info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? DType::f32 : DType::f16;
  return read(v.GetTensorRawData(), info.GetElementCount(), t);
}

// mode: 0 all inputs; 1 z absent (empty name) with dt_bias and state_in present; 2 trailing optional inputs omitted
void scan_case(Tally& t, DType dt, int mode, bool symbolic) {
  const int64_t B = 2, L = 5, E = 24, N = 16;
  ScanProblem p = make_scan(B, L, E, N, dt, mode != 1 && mode != 2, mode != 2, mode != 2, 500 + mode + 10 * (int)dt);
  const int64_t s = symbolic ? -1 : 0;
  auto dims = [&](std::vector<int64_t> d) {
    if (symbolic) d[0] = s;  // batch symbolic
    return d;
  };
  std::vector<std::string> in = {"x", "dt", "A", "Bm", "Cm", "D"};
  if (mode == 0) in.insert(in.end(), {"z", "dt_bias", "state_in"});
  if (mode == 1) in.insert(in.end(), {"", "dt_bias", "state_in"});
  std::vector<onnxw::Msg> inputs = {
      onnxw::value_info("x", elem(dt), dims({B, L, E})),  onnxw::value_info("dt", elem(dt), dims({B, L, E})),
      onnxw::value_info("A", onnxw::FLOAT, {E, N}),       onnxw::value_info("Bm", elem(dt), dims({B, L, N})),
      onnxw::value_info("Cm", elem(dt), dims({B, L, N})), onnxw::value_info("D", onnxw::FLOAT, {E})};
  std::vector<Feed> feeds = {{"x", dt, {B, L, E}, p.x.data()},   {"dt", dt, {B, L, E}, p.dt.data()},
                             {"A", DType::f32, {E, N}, p.A.data()}, {"Bm", dt, {B, L, N}, p.Bm.data()},
                             {"Cm", dt, {B, L, N}, p.Cm.data()},  {"D", DType::f32, {E}, p.D.data()}};
  if (mode == 0) {
    inputs.push_back(onnxw::value_info("z", elem(dt), dims({B, L, E})));
    feeds.push_back({"z", dt, {B, L, E}, p.z.data()});
  }
  if (mode != 2) {
    inputs.push_back(onnxw::value_info("dt_bias", onnxw::FLOAT, {E}));
    inputs.push_back(onnxw::value_info("state_in", onnxw::FLOAT, dims({B, E, N})));
    feeds.push_back({"dt_bias", DType::f32, {E}, p.dt_bias.data()});
    feeds.push_back({"state_in", DType::f32, {B, E, N}, p.state_in.data()});
  }
  // y goes through an Identity: its type must be inferred from the custom op, not read off a graph output.
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("SelectiveScan", "ai.hubmoe", in, {"y_raw", "state_out"}, {onnxw::attr_i("delta_softplus", 1)}, "scan"),
      onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "id")};
  std::vector<onnxw::Msg> outputs = {onnxw::value_info("y", elem(dt), dims({B, L, E})),
                                     onnxw::value_info("state_out", onnxw::FLOAT, dims({B, E, N}))};
  char what[160];
  std::snprintf(what, sizeof what, "ORT SelectiveScan %s %s%s", hubmoe::dtype_name(dt),
                mode == 0 ? "all inputs" : mode == 1 ? "z absent (empty name)" : "optional inputs omitted",
                symbolic ? " symbolic batch" : "");
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, inputs, outputs));
    auto out = run(sess, feeds, {"y", "state_out"});
    std::vector<double> ry, rs;
    ref::scan(p.r, ry, rs);
    t.check_err(std::string(what) + " y", rel_err(values(out[0]), ry), dt == DType::f32 ? 2e-5 : 1e-3);
    t.check_err(std::string(what) + " state_out", rel_err(values(out[1]), rs), 2e-5);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what, e.what());
    t.failed++;
  }
}

// Runs a one-MoE-node model on `feeds` and checks its output y against the reference for `p`.
void check_moe_model(Tally& t, const char* what, const std::vector<onnxw::Msg>& nodes, const std::vector<onnxw::Msg>& inputs,
                     const std::vector<onnxw::Msg>& outputs, const std::vector<Feed>& feeds, const MoeProblem& p, DType dt) {
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, inputs, outputs));
    auto out = run(sess, feeds, {"y"});
    std::vector<double> ry;
    ref::moe(p.r, ry);
    t.check_err(what, rel_err(values(out[0]), ry), dt == DType::f32 ? 2e-5 : 1e-3);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what, e.what());
    t.failed++;
  }
}

void expect_error(Tally& t, const char* what, const std::string& needle, const std::function<void()>& fn);

// bias_mode: 0 none, 1 both, 2 fc1_bias absent (empty name) and fc2_bias present. Routing "none" (a dense MLP):
// one expert and no router_logits input (empty name); a model that gives it logits fails at run.
void moe_case(Tally& t, DType dt, DType lt, const char* routing, int k, bool renorm, const char* act, bool glu,
              int bias_mode) {
  const bool dense = std::string(routing) == "none";
  const int64_t S = 7, H = 32, X = dense ? 1 : 6, I = 24, F1 = glu ? 2 * I : I;
  MoeProblem p = make_moe(S, H, X, I, k, routing, renorm, act, glu, bias_mode != 0, dt, lt, 900 + bias_mode + k);
  if (bias_mode == 2) p.r.fc1_bias.clear();
  std::vector<std::string> in = {"x", dense ? "" : "logits", "fc1", bias_mode == 1 ? "b1" : "", "fc2"};
  if (bias_mode) in.push_back("b2");
  std::vector<onnxw::Msg> inputs = {onnxw::value_info("x", elem(dt), {-1, H}),
                                    onnxw::value_info("logits", elem(lt), {-1, X}),
                                    onnxw::value_info("fc1", elem(dt), {X, F1, H}),
                                    onnxw::value_info("fc2", elem(dt), {X, H, I})};
  std::vector<Feed> feeds = {{"x", dt, {S, H}, p.x.data()},
                             {"logits", lt, {S, X}, p.logits.data()},
                             {"fc1", dt, {X, F1, H}, p.fc1.data()},
                             {"fc2", dt, {X, H, I}, p.fc2.data()}};
  if (bias_mode == 1) {
    inputs.push_back(onnxw::value_info("b1", elem(dt), {X, F1}));
    feeds.push_back({"b1", dt, {X, F1}, p.fc1_bias.data()});
  }
  if (bias_mode) {
    inputs.push_back(onnxw::value_info("b2", elem(dt), {X, H}));
    feeds.push_back({"b2", dt, {X, H}, p.fc2_bias.data()});
  }
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("MoE", "ai.hubmoe", in, {"y_raw"},
                  {onnxw::attr_i("k", k), onnxw::attr_s("routing", routing), onnxw::attr_i("renormalize", renorm),
                   onnxw::attr_s("activation", act), onnxw::attr_i("glu", glu)},
                  "moe"),
      onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "id")};
  std::vector<onnxw::Msg> outputs = {onnxw::value_info("y", elem(dt), {-1, H})};
  char what[200];
  std::snprintf(what, sizeof what, "ORT MoE %s logits=%s %s k=%d renorm=%d %s glu=%d bias=%s", hubmoe::dtype_name(dt),
                hubmoe::dtype_name(lt), routing, k, renorm, act, glu,
                bias_mode == 0 ? "none" : bias_mode == 1 ? "both" : "fc2 only (fc1 empty name)");
  if (dense) {  // no logits input
    inputs.erase(inputs.begin() + 1);
    feeds.erase(feeds.begin() + 1);
  }
  check_moe_model(t, what, nodes, inputs, outputs, feeds, p, dt);
  if (dense && bias_mode == 0) {
    expect_error(t, "ORT MoE routing none given router_logits is reported at run", "routing \"none\" takes no 'router_logits'", [&] {
      std::vector<onnxw::Msg> bad_nodes = nodes;
      std::vector<std::string> bad_in = in;
      bad_in[1] = "logits";
      bad_nodes[0] = onnxw::node("MoE", "ai.hubmoe", bad_in, {"y_raw"},
                                 {onnxw::attr_i("k", k), onnxw::attr_s("routing", routing), onnxw::attr_s("activation", act),
                                  onnxw::attr_i("glu", glu)},
                                 "moe");
      std::vector<onnxw::Msg> bad_inputs = inputs;
      bad_inputs.insert(bad_inputs.begin() + 1, onnxw::value_info("logits", onnxw::FLOAT, {-1, X}));
      std::vector<Feed> bad_feeds = feeds;
      bad_feeds.insert(bad_feeds.begin() + 1, {"logits", DType::f32, {S, X}, p.logits.data()});
      Ort::Session s = make_session(onnxw::model(bad_nodes, bad_inputs, outputs), true);
      run(s, bad_feeds, {"y"}, true);
    });
  }
}

// A failure must come back as an error naming the problem, not a crash.
void expect_error(Tally& t, const char* what, const std::string& needle, const std::function<void()>& fn) {
  try {
    fn();
    std::printf("FAIL %s: no error\n", what);
    t.failed++;
  } catch (const std::exception& e) {
    const bool ok = std::string(e.what()).find(needle) != std::string::npos;
    if (!ok) std::printf("FAIL %s: error '%s' lacks '%s'\n", what, e.what(), needle.c_str());
    t.check(ok, what, 0, 0);
  }
}

// MoE with the SCAP masks (inputs 6 and 7, float32 [X, 2]) and both biases. mode 0: fc1_scap and fc2_scap present;
// 1: fc1_scap absent (empty name) and fc2_scap present. Then a bad fc1_scap shape, reported at run. With
// input_major (mode 0 only), the weights are given input-major (layout = "input_major"; fc1 [X, H, F1], fc2
// [X, I, H]), and a bad layout value must fail the load.
void moe_scap_case(Tally& t, DType dt, int mode, bool input_major_weights = false) {
  const int64_t S = 7, H = 32, X = 6, I = 24;
  const bool glu = mode == 0;
  const int k = mode == 0 ? 2 : 1;
  const char* routing = mode == 0 ? "softmax" : "sigmoid";
  const char* act = mode == 0 ? "silu" : "gelu_erf";
  const int64_t F1 = glu ? 2 * I : I;
  MoeProblem p0 = make_moe(S, H, X, I, k, routing, false, act, glu, true, dt, DType::f32, 950 + mode);
  add_scap(p0, mode == 0, true, 960 + mode);
  const MoeProblem p = input_major_weights ? input_major(p0) : p0;
  const std::vector<int64_t> fc1_dims = input_major_weights ? std::vector<int64_t>{X, H, F1} : std::vector<int64_t>{X, F1, H};
  const std::vector<int64_t> fc2_dims = input_major_weights ? std::vector<int64_t>{X, I, H} : std::vector<int64_t>{X, H, I};
  std::vector<std::string> in = {"x", "logits", "fc1", "b1", "fc2", "b2", mode == 0 ? "s1" : "", "s2"};
  std::vector<onnxw::Msg> inputs = {
      onnxw::value_info("x", elem(dt), {-1, H}),      onnxw::value_info("logits", onnxw::FLOAT, {-1, X}),
      onnxw::value_info("fc1", elem(dt), fc1_dims),   onnxw::value_info("b1", elem(dt), {X, F1}),
      onnxw::value_info("fc2", elem(dt), fc2_dims),   onnxw::value_info("b2", elem(dt), {X, H}),
      onnxw::value_info("s2", onnxw::FLOAT, {X, 2})};
  std::vector<Feed> feeds = {{"x", dt, {S, H}, p.x.data()},          {"logits", DType::f32, {S, X}, p.logits.data()},
                             {"fc1", dt, fc1_dims, p.fc1.data()},      {"b1", dt, {X, F1}, p.fc1_bias.data()},
                             {"fc2", dt, fc2_dims, p.fc2.data()},      {"b2", dt, {X, H}, p.fc2_bias.data()},
                             {"s2", DType::f32, {X, 2}, p.fc2_scap.data()}};
  if (mode == 0) {
    inputs.push_back(onnxw::value_info("s1", onnxw::FLOAT, {X, 2}));
    feeds.push_back({"s1", DType::f32, {X, 2}, p.fc1_scap.data()});
  }
  std::vector<onnxw::Attr> attrs = {onnxw::attr_i("k", k), onnxw::attr_s("routing", routing),
                                    onnxw::attr_s("activation", act), onnxw::attr_i("glu", glu)};
  if (input_major_weights) attrs.push_back(onnxw::attr_s("layout", "input_major"));
  std::vector<onnxw::Msg> nodes = {onnxw::node("MoE", "ai.hubmoe", in, {"y_raw"}, attrs, "moe"),
                                   onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "id")};
  std::vector<onnxw::Msg> outputs = {onnxw::value_info("y", elem(dt), {-1, H})};
  char what[200];
  std::snprintf(what, sizeof what, "ORT MoE %s %s k=%d %s glu=%d bias=both %s%s", hubmoe::dtype_name(dt), routing, k,
                act, glu, mode == 0 ? "fc1_scap+fc2_scap" : "fc2_scap only (fc1_scap empty name)",
                input_major_weights ? " layout=input_major" : "");
  check_moe_model(t, what, nodes, inputs, outputs, feeds, p, dt);
  if (mode != 0 || dt != DType::f32) return;
  if (input_major_weights) {
    expect_error(t, "ORT MoE unknown layout is refused at load", "attribute 'layout' must be", [&] {
      std::vector<onnxw::Attr> bad = attrs;
      bad.back() = onnxw::attr_s("layout", "row_major");
      make_session(onnxw::model({onnxw::node("MoE", "ai.hubmoe", in, {"y_raw"}, bad, "moe"), nodes[1]}, inputs, outputs),
                   true);
    });
    expect_error(t, "ORT MoE input_major fc1 of the output-major shape is reported at run",
                 "input 'fc1' has shape [6, 48, 32], expected [6, 32, 48] = [X, H, F1] (layout \"input_major\")", [&] {
                   std::vector<onnxw::Msg> bad_inputs = inputs;
                   bad_inputs[2] = onnxw::value_info("fc1", elem(dt), {X, F1, H});
                   Ort::Session s = make_session(onnxw::model(nodes, bad_inputs, outputs), true);
                   std::vector<Feed> bad = feeds;
                   bad[2] = {"fc1", dt, {X, F1, H}, p0.fc1.data()};
                   run(s, bad, {"y"}, true);
                 });
    return;
  }
  expect_error(t, "ORT MoE fc1_scap of the wrong shape is reported at run", "'fc1_scap' must be [X, 2] = [6, 2]", [&] {
    std::vector<onnxw::Msg> bad_inputs = inputs;
    bad_inputs.back() = onnxw::value_info("s1", onnxw::FLOAT, {X - 1, 2});
    Ort::Session s = make_session(onnxw::model(nodes, bad_inputs, outputs), true);
    std::vector<Feed> bad = feeds;
    bad.back().dims = {X - 1, 2};
    run(s, bad, {"y"}, true);
  });
}

void error_cases(Tally& t) {
  const int64_t S = 3, H = 8, X = 4, I = 6;
  MoeProblem p = make_moe(S, H, X, I, 2, "softmax", false, "silu", false, false, DType::f32, DType::f32, 5);
  auto moe_model = [&](const std::vector<onnxw::Attr>& attrs, int64_t fc1_rows) {
    return onnxw::model({onnxw::node("MoE", "ai.hubmoe", {"x", "logits", "fc1", "", "fc2"}, {"y"}, attrs, "moe")},
                        {onnxw::value_info("x", onnxw::FLOAT, {S, H}), onnxw::value_info("logits", onnxw::FLOAT, {S, X}),
                         onnxw::value_info("fc1", onnxw::FLOAT, {X, fc1_rows, H}),
                         onnxw::value_info("fc2", onnxw::FLOAT, {X, H, I})},
                        {onnxw::value_info("y", onnxw::FLOAT, {S, H})});
  };
  expect_error(t, "ORT MoE unknown activation is refused at load", "activation", [&] {
    make_session(moe_model({onnxw::attr_i("k", 2), onnxw::attr_s("activation", "swish")}, I), true);
  });
  expect_error(t, "ORT MoE missing k is refused at load", "'k'", [&] { make_session(moe_model({}, I), true); });
  expect_error(t, "ORT MoE fc1 rows not matching glu is reported at run", "fc1", [&] {
    Ort::Session s = make_session(moe_model({onnxw::attr_i("k", 2), onnxw::attr_i("glu", 1)}, I), true);
    run(s, {{"x", DType::f32, {S, H}, p.x.data()},
            {"logits", DType::f32, {S, X}, p.logits.data()},
            {"fc1", DType::f32, {X, I, H}, p.fc1.data()},
            {"fc2", DType::f32, {X, H, I}, p.fc2.data()}},
        {"y"}, true);
  });
}

// x [B, 3, K] with a symbolic batch; W and bias as graph inputs; bias absent when !bias.
// Runs a one-node fully-connected model (SparseLinear, Linear) on `feeds` and checks its output y: the shape, and the
// values against `want` (rel_err with `floor`).
void check_fc_model(Tally& t, const std::string& what, const std::string& model, const std::vector<Feed>& feeds,
                    const std::vector<int64_t>& shape, const std::vector<double>& want, double floor, DType dt) {
  try {
    Ort::Session sess = make_session(model);
    auto out = run(sess, feeds, {"y"});
    t.check(out[0].GetTensorTypeAndShapeInfo().GetShape() == shape, what + " shape", 0, 0);
    t.check_err(what, rel_err(values(out[0]), want, floor), dt == DType::f32 ? 2e-5 : 1e-3);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
}

// Linear through ORT: a symbolic batch, bias absent or present, then a W of the input-major shape (reported at run).
void linear_case(Tally& t, DType dt, bool bias) {
  const int64_t B = 2, T = 3, K = 40, N = 24;
  LinearProblem p = make_linear(B * T, K, N, dt, bias, 1300 + bias + 10 * (int)dt);
  std::vector<std::string> in = {"x", "W"};
  if (bias) in.push_back("b");
  std::vector<onnxw::Msg> inputs = {onnxw::value_info("x", elem(dt), {-1, T, K}), onnxw::value_info("W", elem(dt), {N, K})};
  std::vector<Feed> feeds = {{"x", dt, {B, T, K}, p.x.data()}, {"W", dt, {N, K}, p.W.data()}};
  if (bias) {
    inputs.push_back(onnxw::value_info("b", elem(dt), {N}));
    feeds.push_back({"b", dt, {N}, p.bias.data()});
  }
  std::vector<onnxw::Msg> nodes = {onnxw::node("Linear", "ai.hubmoe", in, {"y_raw"}, {}, "linear"),
                                   onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "id")};
  std::vector<onnxw::Msg> outputs = {onnxw::value_info("y", elem(dt), {-1, T, N})};
  check_fc_model(t, p.name(" through ORT, symbolic batch"), onnxw::model(nodes, inputs, outputs), feeds, {B, T, N},
                 linear_ref(p), 1e-30, dt);
  if (dt != DType::f32 || bias) return;
  expect_error(t, "ORT Linear W of the input-major shape is reported at run", "input 'W' has shape [40, 24], expected [N, 40]", [&] {
    Ort::Session s = make_session(
        onnxw::model({onnxw::node("Linear", "ai.hubmoe", {"x", "W"}, {"y"}, {}, "linear")},
                     {onnxw::value_info("x", onnxw::FLOAT, {-1, K}), onnxw::value_info("W", onnxw::FLOAT, {-1, -1})},
                     {onnxw::value_info("y", onnxw::FLOAT, {-1, -1})}),
        true);
    run(s, {{"x", DType::f32, {B * T, K}, p.x.data()}, {"W", DType::f32, {K, N}, p.W.data()}}, {"y"}, true);
  });
}

void sparse_case(Tally& t, DType dt, bool bias) {
  const int64_t B = 2, T = 3, K = 40, N = 24;
  SparseProblem p = make_sparse(B * T, K, N, dt, bias, 0.5, 1200 + bias + 10 * (int)dt);
  std::vector<std::string> in = {"x", "W"};
  if (bias) in.push_back("b");
  std::vector<onnxw::Msg> inputs = {onnxw::value_info("x", elem(dt), {-1, T, K}), onnxw::value_info("W", elem(dt), {K, N})};
  std::vector<Feed> feeds = {{"x", dt, {B, T, K}, p.x.data()}, {"W", dt, {K, N}, p.W.data()}};
  if (bias) {
    inputs.push_back(onnxw::value_info("b", elem(dt), {N}));
    feeds.push_back({"b", dt, {N}, p.bias.data()});
  }
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("SparseLinear", "ai.hubmoe", in, {"y_raw"},
                  {onnxw::attr_f("mode", p.mode), onnxw::attr_f("threshold", p.threshold)}, "sparse"),
      onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "id")};
  std::vector<onnxw::Msg> outputs = {onnxw::value_info("y", elem(dt), {-1, T, N})};
  check_fc_model(t, p.name(" through ORT, symbolic batch"), onnxw::model(nodes, inputs, outputs), feeds, {B, T, N},
                 sparse_ref::sparse_linear(p), 1.0, dt);
  if (dt != DType::f32 || !bias) return;
  auto model = [&](const std::vector<onnxw::Attr>& attrs) {
    return onnxw::model({onnxw::node("SparseLinear", "ai.hubmoe", {"x", "W"}, {"y"}, attrs, "sparse")},
                        {onnxw::value_info("x", onnxw::FLOAT, {-1, K}), onnxw::value_info("W", onnxw::FLOAT, {-1, N})},
                        {onnxw::value_info("y", onnxw::FLOAT, {-1, N})});
  };
  expect_error(t, "ORT SparseLinear missing threshold is refused at load", "'threshold'",
               [&] { make_session(model({onnxw::attr_f("mode", 0.f)}), true); });
  expect_error(t, "ORT SparseLinear K mismatch is reported at run", "input 'W' has shape [39, 24]", [&] {
    Ort::Session s = make_session(model({onnxw::attr_f("threshold", 0.1f)}), true);
    run(s, {{"x", DType::f32, {B * T, K}, p.x.data()}, {"W", DType::f32, {K - 1, N}, p.W.data()}}, {"y"}, true);
  });
}

// logits [B, T, V] with a symbolic batch through an Identity (the int64 output's type is inferred from the op).
void next_token_case(Tally& t, DType dt) {
  NextTokenProblem p = make_next_token(3, 2, 70, 64, dt, 7300 + (int)dt);
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("NextToken", "ai.hubmoe", {"logits"}, {"n_raw"}, {onnxw::attr_i("vocab", p.vocab)}, "next"),
      onnxw::node("Identity", "", {"n_raw"}, {"next"}, {}, "id")};
  const std::string what = p.name(" through ORT, symbolic batch");
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, {onnxw::value_info("logits", elem(dt), {-1, p.T, p.V})},
                                                  {onnxw::value_info("next", onnxw::INT64, {-1})}));
    auto out = run(sess, {{"logits", dt, {p.B, p.T, p.V}, p.logits.data()}}, {"next"});
    const auto info = out[0].GetTensorTypeAndShapeInfo();
    t.check(info.GetShape() == std::vector<int64_t>{p.B} && info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
            what + " shape and type", 0, 0);
    const int64_t* got = out[0].GetTensorData<int64_t>();
    const std::vector<int64_t> want = next_token_ref(p);
    t.check(std::vector<int64_t>(got, got + p.B) == want, what, 1, 0);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (dt != DType::f32) return;
  auto model = [&](int64_t vocab) {
    return onnxw::model({onnxw::node("NextToken", "ai.hubmoe", {"logits"}, {"next"}, {onnxw::attr_i("vocab", vocab)}, "next")},
                        {onnxw::value_info("logits", onnxw::FLOAT, {-1, -1, -1})}, {onnxw::value_info("next", onnxw::INT64, {-1})});
  };
  expect_error(t, "ORT NextToken vocab 0 is refused at load", "'vocab' must be at least 1", [&] { make_session(model(0), true); });
  expect_error(t, "ORT NextToken vocab past the logits is reported at run", "attribute 'vocab' is 71", [&] {
    Ort::Session s = make_session(model(71), true);
    run(s, {{"logits", DType::f32, {p.B, p.T, p.V}, p.logits.data()}}, {"next"}, true);
  });
}

// x [B, T, D] with symbolic B and T, the weights as initialisers-free inputs; 3 and 2 segments; then errors.
void split_rms_case(Tally& t, DType dt, std::vector<int64_t> lens) {
  SplitRmsProblem p = make_split_rms(6, lens, dt, 1e-6f, 8300 + (int)dt + lens.size());
  const int64_t B = 2, T = 3;
  std::vector<std::string> ins = {"x"}, outs;
  std::vector<onnxw::Msg> in_info = {onnxw::value_info("x", elem(dt), {-1, -1, p.D})}, out_info;
  for (int g = 0; g < p.G; ++g) {
    ins.push_back("w" + std::to_string(g));
    outs.push_back("y" + std::to_string(g));
    in_info.push_back(onnxw::value_info(ins.back(), elem(dt), {p.len[g]}));
    out_info.push_back(onnxw::value_info(outs.back(), elem(dt), {-1, -1, p.len[g]}));
  }
  const std::string what = p.name(" through ORT, symbolic batch and sequence");
  try {
    Ort::Session sess = make_session(onnxw::model({onnxw::node("SplitRMSNorm", "ai.hubmoe", ins, outs, {onnxw::attr_f("epsilon", p.eps)}, "n")},
                                                  in_info, out_info));
    std::vector<Feed> feeds = {{"x", dt, {B, T, p.D}, p.x.data()}};
    for (int g = 0; g < p.G; ++g) feeds.push_back({ins[1 + g], dt, {p.len[g]}, p.w[g].data()});
    auto out = run(sess, feeds, outs);
    double err = 0;
    bool shapes = true;
    for (int g = 0; g < p.G; ++g) {
      shapes = shapes && out[g].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{B, T, p.len[g]};
      err = std::max(err, rel_err(read(out[g].GetTensorRawData(), static_cast<size_t>(p.rows * p.len[g]), dt), split_rms_ref(p, g), 1e-3));
    }
    t.check(shapes, what + " output shapes", 0, 0);
    t.check_err(what, err, split_rms_tol(dt));
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (dt != DType::f32 || p.G != 3) return;
  auto model = [&](int n_out) {
    std::vector<std::string> o(outs.begin(), outs.begin() + n_out);
    std::vector<onnxw::Msg> oi(out_info.begin(), out_info.begin() + n_out);
    std::vector<onnxw::Msg> ii = {onnxw::value_info("x", elem(dt), {-1, -1, -1})};  // any x: the op checks it
    for (int g = 0; g < p.G; ++g) ii.push_back(onnxw::value_info(ins[1 + g], elem(dt), {-1}));
    return onnxw::model({onnxw::node("SplitRMSNorm", "ai.hubmoe", ins, o, {}, "n")}, ii, oi);
  };
  expect_error(t, "ORT SplitRMSNorm with fewer outputs than weights is reported at run", "3 weight(s) but 2 output(s)", [&] {
    Ort::Session s = make_session(model(2), true);
    std::vector<Feed> feeds = {{"x", dt, {B, T, p.D}, p.x.data()}};
    for (int g = 0; g < p.G; ++g) feeds.push_back({ins[1 + g], dt, {p.len[g]}, p.w[g].data()});
    run(s, feeds, {"y0", "y1"}, true);
  });
  expect_error(t, "ORT SplitRMSNorm weights not adding up to x's last dim are reported at run", "has last dim", [&] {
    Ort::Session s = make_session(model(3), true);
    std::vector<Feed> feeds = {{"x", dt, {1, B * T, p.D - 1}, p.x.data()}};
    for (int g = 0; g < p.G; ++g) feeds.push_back({ins[1 + g], dt, {p.len[g]}, p.w[g].data()});
    run(s, feeds, outs, true);
  });
}

// x [B, T, D] with symbolic B and T; y and sum through Identity nodes, so that their types come from the op's
// inference. mode 0: skip, y and sum; 1: skip, y only (sum left off the end); 2: skip absent (empty name), y only;
// 3: skip, and sum given an empty name. Then the errors: a negative epsilon and sum without skip at load, a skip of
// another shape, a weight of another length and inputs of another type at run.
void skip_rms_case(Tally& t, DType dt, int mode) {
  const int64_t B = 2, T = 3, D = 37;
  const bool skip = mode != 2, sum = mode == 0;
  SkipRmsProblem p = make_skip_rms(B * T, D, dt, skip, 1e-5f, 8900 + mode + 10 * (int)dt);
  std::vector<std::string> outs = {"y_raw"};
  if (mode == 0) outs.push_back("sum_raw");
  if (mode == 3) outs.push_back("");
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("SkipRMSNorm", "ai.hubmoe", {"x", skip ? "skip" : "", "w"}, outs, {onnxw::attr_f("epsilon", p.eps)}, "norm"),
      onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "iy")};
  if (sum) nodes.push_back(onnxw::node("Identity", "", {"sum_raw"}, {"sum"}, {}, "is"));
  std::vector<onnxw::Msg> in = {onnxw::value_info("x", elem(dt), {-1, -1, D}), onnxw::value_info("w", elem(dt), {D})};
  std::vector<Feed> feeds = {{"x", dt, {B, T, D}, p.x.data()}, {"w", dt, {D}, p.w.data()}};
  if (skip) {
    in.push_back(onnxw::value_info("skip", elem(dt), {-1, -1, D}));
    feeds.push_back({"skip", dt, {B, T, D}, p.skip.data()});
  }
  std::vector<onnxw::Msg> out = {onnxw::value_info("y", elem(dt), {-1, -1, D})};
  if (sum) out.push_back(onnxw::value_info("sum", elem(dt), {-1, -1, D}));
  static const char* const kModes[] = {"skip, y and sum", "skip, y only", "skip absent (empty name)", "skip, sum named ''"};
  const std::string what = p.name((std::string(" through ORT, ") + kModes[mode] + ", symbolic batch and sequence").c_str());
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, in, out));
    auto got = run(sess, feeds, sum ? std::vector<std::string>{"y", "sum"} : std::vector<std::string>{"y"});
    bool shapes = true;
    for (const auto& v : got) shapes = shapes && v.GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{B, T, D};
    t.check(shapes, what + " output shapes", !shapes, 0);
    t.check_err(what, rel_err(values(got[0]), skip_rms_ref(p), 1e-3), skip_rms_tol(dt));
    if (sum) {
      const bool same = values(got[1]) == skip_rms_sum_ref(p);
      t.check(same, what + " sum = round_T(x + skip) exactly", !same, 0);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (mode != 0) return;
  // Any shapes and types in the graph: the op checks them.
  auto model = [&](const std::vector<std::string>& ins, const std::vector<std::string>& outs2, float eps, DType xt, DType st, DType wt) {
    std::vector<onnxw::Msg> o = {onnxw::value_info("y", elem(xt), {-1, -1, -1})};
    if (outs2.size() > 1) o.push_back(onnxw::value_info("sum", elem(xt), {-1, -1, -1}));
    std::vector<onnxw::Msg> i = {onnxw::value_info("x", elem(xt), {-1, -1, -1}), onnxw::value_info("w", elem(wt), {-1})};
    if (!ins[1].empty()) i.push_back(onnxw::value_info("skip", elem(st), {-1, -1, -1}));
    return onnxw::model({onnxw::node("SkipRMSNorm", "ai.hubmoe", ins, outs2, {onnxw::attr_f("epsilon", eps)}, "norm")}, i, o);
  };
  const std::vector<std::string> all = {"x", "skip", "w"}, ys = {"y", "sum"};
  expect_error(t, "ORT SkipRMSNorm negative epsilon is refused at load", "SkipRMSNorm: attribute 'epsilon' must be a number >= 0", [&] {
    make_session(model(all, ys, -1e-6f, dt, dt, dt), true);
  });
  expect_error(t, "ORT SkipRMSNorm sum without skip is refused at load",
               "SkipRMSNorm: output 'sum' (x + skip) is requested, but input 'skip' is absent",
               [&] { make_session(model({"x", "", "w"}, ys, 1e-6f, dt, dt, dt), true); });
  const Buf big = zeros(static_cast<size_t>(B * (T + 1) * D), dt);
  expect_error(t, "ORT SkipRMSNorm skip of another shape is reported at run",
               "SkipRMSNorm: input 'skip' has shape [2, 4, 37], expected the shape of 'x', [2, 3, 37]", [&] {
                 Ort::Session s = make_session(model(all, ys, 1e-6f, dt, dt, dt), true);
                 run(s, {{"x", dt, {B, T, D}, p.x.data()}, {"skip", dt, {B, T + 1, D}, big.data()}, {"w", dt, {D}, p.w.data()}}, ys, true);
               });
  expect_error(t, "ORT SkipRMSNorm weight of another length is reported at run",
               "SkipRMSNorm: input 'weight' has shape [36], expected [37] (the last dim of 'x', [2, 3, 37])", [&] {
                 Ort::Session s = make_session(model(all, ys, 1e-6f, dt, dt, dt), true);
                 run(s, {{"x", dt, {B, T, D}, p.x.data()}, {"skip", dt, {B, T, D}, p.skip.data()}, {"w", dt, {D - 1}, p.w.data()}}, ys, true);
               });
  const DType other = dt == DType::f32 ? DType::f16 : DType::f32;
  const std::string want = std::string(" is ") + hubmoe::dtype_name(other) + ", expected " + hubmoe::dtype_name(dt);
  const Buf w_other = make_buf(p.w.vals, other), skip_other = make_buf(p.skip.vals, other);
  expect_error(t, "ORT SkipRMSNorm weight of another type is reported at run", "SkipRMSNorm: input 'weight'" + want, [&] {
    Ort::Session s = make_session(model({"x", "", "w"}, {"y"}, 1e-6f, dt, dt, other), true);
    run(s, {{"x", dt, {B, T, D}, p.x.data()}, {"w", other, {D}, w_other.data()}}, {"y"}, true);
  });
  expect_error(t, "ORT SkipRMSNorm skip of another type is reported at run", "SkipRMSNorm: input 'skip'" + want, [&] {
    Ort::Session s = make_session(model(all, {"y"}, 1e-6f, dt, other, dt), true);
    run(s, {{"x", dt, {B, T, D}, p.x.data()}, {"skip", other, {B, T, D}, skip_other.data()}, {"w", dt, {D}, p.w.data()}}, {"y"}, true);
  });
}

// Two norms chained as the fused graph chains them: the second's x is the first's sum, whose shape ONNX Runtime's
// inference leaves open (and hands to the op as rank 0). A Flatten (axis 2) after the second fails to load if that
// norm's y were inferred as a scalar.
void skip_rms_chain_case(Tally& t, DType dt) {
  const int64_t B = 2, T = 3, D = 40;
  const SkipRmsProblem p1 = make_skip_rms(B * T, D, dt, true, 1e-6f, 8950 + (int)dt);
  SkipRmsProblem p2 = make_skip_rms(B * T, D, dt, true, 1e-6f, 8960 + (int)dt);
  p2.x = make_buf(skip_rms_sum_ref(p1), dt);
  const auto eps = onnxw::attr_f("epsilon", p1.eps);
  std::vector<onnxw::Msg> nodes = {onnxw::node("SkipRMSNorm", "ai.hubmoe", {"x", "k1", "w1"}, {"y1", "s1"}, {eps}, "n1"),
                                   onnxw::node("SkipRMSNorm", "ai.hubmoe", {"s1", "k2", "w2"}, {"y2", "s2"}, {eps}, "n2"),
                                   onnxw::node("Flatten", "", {"y2"}, {"flat"}, {onnxw::attr_i("axis", 2)}, "flatten")};
  std::vector<onnxw::Msg> in = {onnxw::value_info("x", elem(dt), {-1, -1, D}), onnxw::value_info("k1", elem(dt), {-1, -1, D}),
                                onnxw::value_info("w1", elem(dt), {D}), onnxw::value_info("k2", elem(dt), {-1, -1, D}),
                                onnxw::value_info("w2", elem(dt), {D})};
  std::vector<onnxw::Msg> out = {onnxw::value_info("flat", elem(dt), {-1, D}), onnxw::value_info("s2", elem(dt), {-1, -1, D})};
  const std::string what = p2.name(" through ORT, x the previous norm's sum, then Flatten");
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, in, out));
    auto got = run(sess,
                   {{"x", dt, {B, T, D}, p1.x.data()}, {"k1", dt, {B, T, D}, p1.skip.data()}, {"w1", dt, {D}, p1.w.data()},
                    {"k2", dt, {B, T, D}, p2.skip.data()}, {"w2", dt, {D}, p2.w.data()}},
                   {"flat", "s2"});
    const bool shape = got[0].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{B * T, D};
    t.check(shape, what + " output shape", !shape, 0);
    t.check_err(what, rel_err(values(got[0]), skip_rms_ref(p2), 1e-3), skip_rms_tol(dt));
    const bool same = values(got[1]) == skip_rms_sum_ref(p2);
    t.check(same, what + " sum = round_T(x + skip) exactly", !same, 0);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
}

// int64 mask [B, S] and cache_position [T] with symbolic dims; all three outputs, then the bias alone; errors.
void static_mask_case(Tally& t, const StaticMaskShape& sh, int n_out) {
  StaticMaskProblem p = make_static_mask(sh.B, sh.S, sh.T, sh.first, sh.groups);
  const StaticMaskWant want = static_mask_ref(p);
  const std::vector<std::string> all = {"bias", "is_new", "source"};
  std::vector<std::string> outs(all.begin(), all.begin() + n_out);
  std::vector<onnxw::Msg> oi = {onnxw::value_info("bias", onnxw::FLOAT, {-1, 1, -1, -1}), onnxw::value_info("is_new", onnxw::BOOL, {1, 1, -1, 1}),
                                onnxw::value_info("source", onnxw::INT64, {-1})};
  oi.resize(static_cast<size_t>(n_out));
  auto model = [&](int64_t groups) {
    return onnxw::model({onnxw::node("StaticAttentionMask", "ai.hubmoe", {"mask", "pos"}, outs, {onnxw::attr_i("groups", groups)}, "m")},
                        {onnxw::value_info("mask", onnxw::INT64, {-1, -1}), onnxw::value_info("pos", onnxw::INT64, {-1})}, oi);
  };
  auto run_i64 = [&](Ort::Session& s, std::vector<int64_t> pdims, bool quiet) {
    Ort::MemoryInfo mi = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<int64_t> mdims = {p.B, p.S};
    std::vector<Ort::Value> vals;
    vals.push_back(Ort::Value::CreateTensor<int64_t>(mi, p.mask.data(), p.mask.size(), mdims.data(), mdims.size()));
    vals.push_back(Ort::Value::CreateTensor<int64_t>(mi, p.position.data(), static_cast<size_t>(pdims[0]), pdims.data(), pdims.size()));
    const char* in_names[] = {"mask", "pos"};
    std::vector<const char*> on;
    for (const auto& o : outs) on.push_back(o.c_str());
    Ort::RunOptions ro;
    if (quiet) ro.SetRunLogSeverityLevel(ORT_LOGGING_LEVEL_FATAL);
    return s.Run(ro, in_names, vals.data(), vals.size(), on.data(), on.size());
  };
  const std::string what = p.name(n_out == 3 ? " through ORT" : " through ORT, bias only");
  try {
    Ort::Session sess = make_session(model(p.groups));
    auto out = run_i64(sess, {p.T}, false);
    const float* b = out[0].GetTensorData<float>();
    bool ok = out[0].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{p.B, 1, p.groups * p.T, p.S} &&
              std::vector<float>(b, b + want.bias.size()) == want.bias;
    if (n_out == 3) {
      const bool* n = out[1].GetTensorData<bool>();
      const int64_t* src = out[2].GetTensorData<int64_t>();
      ok = ok && out[1].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{1, 1, p.S, 1} &&
           out[2].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{p.S} &&
           std::vector<int64_t>(src, src + p.S) == want.source;
      for (int64_t s = 0; s < p.S; ++s) ok = ok && (n[s] ? 1 : 0) == want.is_new[s];
    }
    t.check(ok, what, ok ? 0 : 1, 0);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (n_out != 3) return;
  expect_error(t, "ORT StaticAttentionMask groups 0 is refused at load", "'groups' must be at least 1", [&] { make_session(model(0), true); });
  expect_error(t, "ORT StaticAttentionMask an empty cache_position is reported at run", "with at least one position, got [0]", [&] {
    Ort::Session s = make_session(model(1), true);
    run_i64(s, {0}, true);
  });
}

// xz [B, T, 2E] with symbolic B and T into x_proj-like consumers: the outputs' shapes inferred (an Identity after
// each), with and without the bias (empty name); a bad state shape reported at run.
void mamba_conv_case(Tally& t, DType dt, bool bias) {
  MambaConvProblem p = make_mamba_conv(2, 5, 6, 4, bias, dt, 9300 + (int)dt + (bias ? 10 : 0));
  const MambaConvWant want = mamba_conv_ref(p);
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("MambaConv", "ai.hubmoe", {"xz", "mask", "w", bias ? "b" : "", "state"}, {"u_raw", "z_raw", "s_raw"}, {}, "conv"),
      onnxw::node("Identity", "", {"u_raw"}, {"u"}, {}, "iu"), onnxw::node("Identity", "", {"z_raw"}, {"z"}, {}, "iz"),
      onnxw::node("Identity", "", {"s_raw"}, {"s"}, {}, "is")};
  std::vector<onnxw::Msg> in = {onnxw::value_info("xz", elem(dt), {-1, -1, 2 * p.E}), onnxw::value_info("mask", elem(dt), {-1, -1, 1}),
                                onnxw::value_info("w", elem(dt), {p.E, 1, p.K}), onnxw::value_info("state", elem(dt), {-1, p.E, p.K - 1})};
  if (bias) in.push_back(onnxw::value_info("b", elem(dt), {p.E}));
  std::vector<onnxw::Msg> out = {onnxw::value_info("u", elem(dt), {-1, -1, p.E}), onnxw::value_info("z", elem(dt), {-1, -1, p.E}),
                                 onnxw::value_info("s", elem(dt), {-1, p.E, p.K - 1})};
  const std::string what = p.name(" through ORT, symbolic batch and sequence");
  std::vector<Feed> feeds = {{"xz", dt, {p.B, p.T, 2 * p.E}, p.xz.data()}, {"mask", dt, {p.B, p.T, 1}, p.mask.data()},
                             {"w", dt, {p.E, 1, p.K}, p.weight.data()}, {"state", dt, {p.B, p.E, p.K - 1}, p.state.data()}};
  if (bias) feeds.push_back({"b", dt, {p.E}, p.bias.data()});
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, in, out));
    auto got = run(sess, feeds, {"u", "z", "s"});
    const bool shapes = got[0].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{p.B, p.T, p.E} &&
                        got[2].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{p.B, p.E, p.K - 1};
    t.check(shapes, what + " output shapes", 0, 0);
    const double err = std::max({rel_err(values(got[0]), want.u, 1e-3), rel_err(values(got[1]), want.z, 1e-3), rel_err(values(got[2]), want.state, 1e-3)});
    t.check_err(what, err, mamba_conv_tol(dt));
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (dt != DType::f32 || !bias) return;
  expect_error(t, "ORT MambaConv a state of the wrong width is reported at run", "'state' must be [2, 6, 3], got [2, 6, 2]", [&] {
    std::vector<onnxw::Msg> in2 = in;
    in2[3] = onnxw::value_info("state", elem(dt), {-1, p.E, -1});
    std::vector<onnxw::Msg> out2 = out;
    out2[2] = onnxw::value_info("s", elem(dt), {-1, p.E, -1});
    Ort::Session s = make_session(onnxw::model(nodes, in2, out2), true);
    std::vector<Feed> f = feeds;
    f[3] = {"state", dt, {p.B, p.E, p.K - 2}, p.state.data()};
    run(s, f, {"u", "z", "s"}, true);
  });
}

// The whole mixer in one node with symbolic batch and sequence: outputs' shapes inferred (an Identity after each),
// with and without the norms and biases; a missing norm reported at run.
void mamba_mixer_case(Tally& t, DType dt, bool full) {
  const MambaMixerShape sh{2, 5, 6, 4, 3, 4, full, full, full};
  MambaMixerProblem p = make_mamba_mixer(sh, dt, 9900 + (int)dt + (full ? 10 : 0));
  const MambaMixerWant want = mamba_mixer_ref(p);
  const int64_t E = sh.E, K = sh.K, N = sh.N, R = sh.R, J = p.J();
  const std::vector<std::string> names = {"xz", "mask", "cw", full ? "cb" : "", "cs", "xp", "dp", full ? "db" : "",
                                          "A", "D", "ss", full ? "n0" : "", full ? "n1" : "", full ? "n2" : ""};
  std::vector<onnxw::Msg> nodes = {
      onnxw::node("MambaMixer", "ai.hubmoe", names, {"y_raw", "cs_raw", "ss_raw"}, {}, "mixer"),
      onnxw::node("Identity", "", {"y_raw"}, {"y"}, {}, "iy"), onnxw::node("Identity", "", {"cs_raw"}, {"cs_out"}, {}, "ic"),
      onnxw::node("Identity", "", {"ss_raw"}, {"ss_out"}, {}, "is")};
  const auto f32 = elem(DType::f32);
  std::vector<onnxw::Msg> in = {onnxw::value_info("xz", elem(dt), {-1, -1, 2 * E}), onnxw::value_info("mask", elem(dt), {-1, -1, 1}),
                                onnxw::value_info("cw", elem(dt), {E, 1, K}),        onnxw::value_info("cs", elem(dt), {-1, E, K - 1}),
                                onnxw::value_info("xp", elem(dt), {E, J}),           onnxw::value_info("dp", elem(dt), {R, E}),
                                onnxw::value_info("A", f32, {E, N}),                 onnxw::value_info("D", f32, {E}),
                                onnxw::value_info("ss", f32, {-1, E, N})};
  std::vector<Feed> feeds = {{"xz", dt, {sh.B, sh.T, 2 * E}, p.conv.xz.data()}, {"mask", dt, {sh.B, sh.T, 1}, p.conv.mask.data()},
                             {"cw", dt, {E, 1, K}, p.conv.weight.data()},  {"cs", dt, {sh.B, E, K - 1}, p.conv.state.data()},
                             {"xp", dt, {E, J}, p.x_proj.data()},          {"dp", dt, {R, E}, p.dt_proj.data()},
                             {"A", DType::f32, {E, N}, p.A.data()},        {"D", DType::f32, {E}, p.D.data()},
                             {"ss", DType::f32, {sh.B, E, N}, p.ssm_state.data()}};
  if (full) {
    in.push_back(onnxw::value_info("cb", elem(dt), {E}));
    in.push_back(onnxw::value_info("db", f32, {E}));
    in.push_back(onnxw::value_info("n0", elem(dt), {R}));
    in.push_back(onnxw::value_info("n1", elem(dt), {N}));
    in.push_back(onnxw::value_info("n2", elem(dt), {N}));
    feeds.push_back({"cb", dt, {E}, p.conv.bias.data()});
    feeds.push_back({"db", DType::f32, {E}, p.dt_bias.data()});
    feeds.push_back({"n0", dt, {R}, p.norm[0].data()});
    feeds.push_back({"n1", dt, {N}, p.norm[1].data()});
    feeds.push_back({"n2", dt, {N}, p.norm[2].data()});
  }
  std::vector<onnxw::Msg> out = {onnxw::value_info("y", elem(dt), {-1, -1, E}), onnxw::value_info("cs_out", elem(dt), {-1, E, K - 1}),
                                 onnxw::value_info("ss_out", f32, {-1, E, N})};
  const std::string what = p.name(" through ORT, symbolic batch and sequence");
  try {
    Ort::Session sess = make_session(onnxw::model(nodes, in, out));
    auto got = run(sess, feeds, {"y", "cs_out", "ss_out"});
    const bool shapes = got[0].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{sh.B, sh.T, E} &&
                        got[1].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{sh.B, E, K - 1} &&
                        got[2].GetTensorTypeAndShapeInfo().GetShape() == std::vector<int64_t>{sh.B, E, N};
    t.check(shapes, what + " output shapes", 0, 0);
    const double err = std::max({rel_err(values(got[0]), want.y, 1e-3), rel_err(values(got[1]), want.conv_state, 1e-3),
                                 rel_err(values(got[2]), want.ssm_state, 1e-3)});
    t.check_err(what, err, mamba_mixer_tol(dt));
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", what.c_str(), e.what());
    t.failed++;
  }
  if (dt != DType::f32 || !full) return;
  expect_error(t, "ORT MambaMixer two of the three norms is reported at run", "must be all present or all absent, got 2 of them", [&] {
    std::vector<onnxw::Msg> nodes2 = nodes;
    std::vector<std::string> n2 = names;
    n2[13] = "";
    nodes2[0] = onnxw::node("MambaMixer", "ai.hubmoe", n2, {"y_raw", "cs_raw", "ss_raw"}, {}, "mixer");
    std::vector<onnxw::Msg> in2(in.begin(), in.end() - 1);
    std::vector<Feed> f2(feeds.begin(), feeds.end() - 1);
    Ort::Session s = make_session(onnxw::model(nodes2, in2, out), true);
    run(s, f2, {"y", "cs_out", "ss_out"}, true);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <libonnxruntime.so.1> <libhubmoe_ops.so>\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetApiBase>(dlsym(lib, "OrtGetApiBase"));
  if (!get_base) {
    std::fprintf(stderr, "%s has no OrtGetApiBase\n", argv[1]);
    return 2;
  }
  const OrtApiBase* base = get_base();
  Ort::InitApi(base->GetApi(ORT_API_VERSION));
  std::printf("ONNX Runtime %s\n", base->GetVersionString());
  g_ops_lib = argv[2];
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "hubmoe-test");
  g_env = &env;

  Tally t;
  for (DType dt : {DType::f32, DType::f16}) {
    scan_case(t, dt, 0, false);
    scan_case(t, dt, 1, false);
    scan_case(t, dt, 2, false);
    scan_case(t, dt, 0, true);
  }
  for (DType dt : {DType::f32, DType::f16}) {
    const DType lt = dt;  // fp16 logits with fp16 models, fp32 ones below
    moe_case(t, dt, lt, "softmax", 2, false, "silu", true, 0);
    moe_case(t, dt, DType::f32, "sigmoid", 1, false, "gelu_erf", false, 1);
    moe_case(t, dt, lt, "softmax", 3, true, "gelu_tanh", true, 2);
    moe_case(t, dt, DType::f32, "softmax", 1, false, "relu", false, 2);
    moe_case(t, dt, DType::f32, "none", 1, false, "silu", true, 0);
    moe_case(t, dt, DType::f32, "none", 1, false, "gelu_erf", false, 1);
  }
  error_cases(t);
  moe_scap_case(t, DType::f32, 0);
  moe_scap_case(t, DType::f32, 1);
  moe_scap_case(t, DType::f16, 0);
  moe_scap_case(t, DType::f32, 0, true);
  for (DType dt : {DType::f32, DType::f16})
    for (bool bias : {false, true}) sparse_case(t, dt, bias);
  for (DType dt : {DType::f32, DType::f16})
    for (bool bias : {false, true}) linear_case(t, dt, bias);
  for (DType dt : {DType::f32, DType::f16}) next_token_case(t, dt);
  for (DType dt : {DType::f32, DType::f16}) {
    split_rms_case(t, dt, {16, 4, 4});
    split_rms_case(t, dt, {20, 9});
  }
  for (DType dt : {DType::f32, DType::f16}) {
    for (int mode = 0; mode < 4; ++mode) skip_rms_case(t, dt, mode);
    skip_rms_chain_case(t, dt);
  }
  static_mask_case(t, kStaticMaskShapes[0], 3);
  static_mask_case(t, kStaticMaskShapes[1], 1);
  static_mask_case(t, kStaticMaskShapes[3], 3);
  for (DType dt : {DType::f32, DType::f16}) {
    mamba_conv_case(t, dt, true);
    mamba_conv_case(t, dt, false);
    mamba_mixer_case(t, dt, true);
    mamba_mixer_case(t, dt, false);
  }
  std::printf("%s: %d passed, %d failed\n", t.failed ? "FAILED" : "ok", t.passed, t.failed);
  return t.failed ? 1 : 0;
}
