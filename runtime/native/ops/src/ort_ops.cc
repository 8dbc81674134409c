// ONNX Runtime glue: the ai.hubmoe custom ops for the CPU execution provider and, when built with
// HUBMOE_WITH_CUDA, the CUDA execution provider; and RegisterCustomOps, the library's entry point.
// The library is not linked against libonnxruntime: ORT hands it the API in RegisterCustomOps.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cmath>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "linear.h"
#include "mamba_conv.h"
#include "mamba_mixer.h"
#include "moe.h"
#include "next_token.h"
#include "selective_scan.h"
#include "skip_rms_norm.h"
#include "sparse_linear.h"
#include "split_rms_norm.h"
#include "static_attention_mask.h"
#ifdef HUBMOE_WITH_CUDA
#include "cuda_ops.h"
#endif

namespace {

using namespace hubmoe;

const char* const kDomain = "ai.hubmoe";

const OrtApi& api() { return Ort::GetApi(); }

void check(OrtStatus* st) {
  if (st) {
    std::string m = api().GetErrorMessage(st);
    api().ReleaseStatus(st);
    throw OpError(m);
  }
}

#ifdef HUBMOE_WITH_CUDA
// The CUDA stream ONNX Runtime runs this node on.
void* gpu_stream(OrtKernelContext* ctx) {
  void* stream = nullptr;
  check(api().KernelContext_GetGPUComputeStream(ctx, &stream));
  return stream;
}
#endif

enum class Ep { cpu, cuda };
const char* ep_name(Ep ep) { return ep == Ep::cuda ? "CUDAExecutionProvider" : "CPUExecutionProvider"; }

constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr ONNXTensorElementDataType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr ONNXTensorElementDataType kI64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case kF32:
      return "float32";
    case kF16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    default:
      return "a non-float type";
  }
}

struct TensorIn {
  const OrtValue* value = nullptr;  // null: absent
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  const void* data = nullptr;
  bool present() const { return value != nullptr; }
  ShapeRef shape() const { return present() ? ShapeRef{dims.data(), static_cast<int>(dims.size())} : ShapeRef{}; }
  int rank() const { return present() ? static_cast<int>(dims.size()) : -1; }
};

TensorIn input(OrtKernelContext* ctx, size_t i) {
  size_t n = 0;
  check(api().KernelContext_GetInputCount(ctx, &n));
  TensorIn t;
  if (i >= n) return t;
  check(api().KernelContext_GetInput(ctx, i, &t.value));
  if (!t.value) return t;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check(api().GetTensorTypeAndShape(t.value, &info));
  size_t rank = 0;
  OrtStatus* st = api().GetTensorElementType(info, &t.type);
  if (!st) st = api().GetDimensionsCount(info, &rank);
  if (!st) {
    t.dims.resize(rank);
    st = api().GetDimensions(info, t.dims.data(), rank);
  }
  api().ReleaseTensorTypeAndShapeInfo(info);
  check(st);
  void* p = nullptr;
  check(api().GetTensorMutableData(const_cast<OrtValue*>(t.value), &p));
  t.data = p;
  return t;
}

void* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& dims) {
  OrtValue* v = nullptr;
  check(api().KernelContext_GetOutput(ctx, i, dims.data(), dims.size(), &v));
  void* p = nullptr;
  check(api().GetTensorMutableData(v, &p));
  return p;
}

void expect_type(const TensorIn& t, const char* op, const char* name, ONNXTensorElementDataType want) {
  if (t.present() && t.type != want)
    throw OpError(std::string(op) + ": input '" + name + "' is " + type_name(t.type) + ", expected " + type_name(want));
}

DType dtype_of(ONNXTensorElementDataType t, const char* op) {
  if (t == kF32) return DType::f32;
  if (t == kF16) return DType::f16;
  throw OpError(std::string(op) + ": T must be float32 or float16, got " + type_name(t));
}

int64_t attr_int(const OrtKernelInfo* info, const char* name, int64_t def, bool required = false, const char* op = "") {
  int64_t v = 0;
  OrtStatus* st = api().KernelInfoGetAttribute_int64(info, name, &v);
  if (st) {
    api().ReleaseStatus(st);
    if (required) throw OpError(std::string(op) + ": attribute '" + name + "' (int) is required");
    return def;
  }
  return v;
}

std::string attr_str(const OrtKernelInfo* info, const char* name, const char* def) {
  size_t size = 0;
  OrtStatus* st = api().KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (st) {
    api().ReleaseStatus(st);
    return def;
  }
  std::string s(size, '\0');
  check(api().KernelInfoGetAttribute_string(info, name, &s[0], &size));
  s.resize(size > 0 ? size - 1 : 0);
  return s;
}

float attr_float(const OrtKernelInfo* info, const char* name, float def, bool required = false, const char* op = "") {
  float v = 0.f;
  OrtStatus* st = api().KernelInfoGetAttribute_float(info, name, &v);
  if (st) {
    api().ReleaseStatus(st);
    if (required) throw OpError(std::string(op) + ": attribute '" + name + "' (float) is required");
    return def;
  }
  return v;
}

struct OrtParallel : Parallel {
  OrtKernelContext* ctx;
  explicit OrtParallel(OrtKernelContext* c) : ctx(c) {}
  void run(size_t tasks, void (*body)(void*, size_t), void* c) const override {
    check(api().KernelContext_ParallelFor(ctx, body, tasks, 0, c));
  }
};

// Device scratch for one call, from ORT's allocator for the memory of `like` (an input). Freed when the call
// returns, while the kernels may still run: ORT's device arena hands the block out again only to work queued after
// them on the same compute stream.
struct Scratch {
  OrtAllocator* alloc = nullptr;
  void* p = nullptr;
  Scratch(OrtKernelContext* ctx, const OrtValue* like, size_t bytes, const char* op) {
    const OrtMemoryInfo* mem = nullptr;
    check(api().GetTensorMemoryInfo(like, &mem));
    check(api().KernelContext_GetAllocator(ctx, mem, &alloc));
    if (bytes) p = alloc->Alloc(alloc, bytes);
    if (bytes && !p) {
      api().ReleaseAllocator(alloc);
      throw OpError(std::string(op) + ": could not allocate " + std::to_string(bytes) + " bytes of scratch");
    }
  }
  ~Scratch() {
    if (p) alloc->Free(alloc, p);
    api().ReleaseAllocator(alloc);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

template <typename F>
OrtStatusPtr guarded(const char* op, F&& fn) noexcept {
  try {
    fn();
    return nullptr;
  } catch (const OpError& e) {
    return api().CreateStatus(ORT_INVALID_ARGUMENT, e.what());
  } catch (const Ort::Exception& e) {
    return api().CreateStatus(e.GetOrtErrorCode(), (std::string(op) + ": " + e.what()).c_str());
  } catch (const std::exception& e) {
    return api().CreateStatus(ORT_FAIL, (std::string(op) + ": " + e.what()).c_str());
  } catch (...) {
    return api().CreateStatus(ORT_FAIL, (std::string(op) + ": unknown error").c_str());
  }
}

// Output types: the type and shape inference ORT runs while loading a model. y takes the element type and shape
// of input 0; other outputs are fixed. (ORT builds one type parameter per input and output of a custom op, so
// without this an output that may be float or float16 has no inferable type.)
struct TypeShape {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  std::vector<std::string> syms;
};

OrtStatus* get_type_shape(OrtShapeInferContext* ctx, size_t i, TypeShape& out) {
  OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by ctx
  if (OrtStatus* st = api().ShapeInferContext_GetInputTypeShape(ctx, i, &info)) return st;
  if (OrtStatus* st = api().GetTensorElementType(info, &out.type)) return st;
  size_t rank = 0;
  if (OrtStatus* st = api().GetDimensionsCount(info, &rank)) return st;
  out.dims.resize(rank);
  std::vector<const char*> syms(rank, nullptr);
  if (rank) {
    if (OrtStatus* st = api().GetDimensions(info, out.dims.data(), rank)) return st;
    if (OrtStatus* st = api().GetSymbolicDimensions(info, syms.data(), rank)) return st;
  }
  out.syms.clear();
  for (const char* s : syms) out.syms.emplace_back(s ? s : "");
  return nullptr;
}

OrtStatus* set_type_shape(OrtShapeInferContext* ctx, size_t i, const TypeShape& ts) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api().CreateTensorTypeAndShapeInfo(&info)) return st;
  std::vector<const char*> syms;
  for (const auto& s : ts.syms) syms.push_back(s.c_str());
  OrtStatus* st = api().SetTensorElementType(info, ts.type);
  if (!st) st = api().SetDimensions(info, ts.dims.data(), ts.dims.size());
  if (!st) st = api().SetSymbolicDimensions(info, syms.data(), syms.size());
  if (!st) st = api().ShapeInferContext_SetOutputTypeShape(ctx, i, info);
  api().ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

// ─── SelectiveScan ────────────────────────────────────────────────────────────────────────────────────────────

struct ScanKernel {
  Ep ep;
  bool softplus;
  ScanKernel(const OrtKernelInfo* info, Ep e) : ep(e), softplus(attr_int(info, "delta_softplus", 1) != 0) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("SelectiveScan", [&] {
      const char* op = "SelectiveScan";
      TensorIn x = input(ctx, 0), dt = input(ctx, 1), A = input(ctx, 2), Bm = input(ctx, 3), Cm = input(ctx, 4),
               D = input(ctx, 5), z = input(ctx, 6), bias = input(ctx, 7), st = input(ctx, 8);
      ScanArgs a;
      scan_check_shapes(x.shape(), dt.shape(), A.shape(), Bm.shape(), Cm.shape(), D.shape(), z.shape(), bias.shape(),
                        st.shape(), a);
      a.dtype = dtype_of(x.type, op);
      expect_type(dt, op, "dt", x.type);
      expect_type(Bm, op, "Bm", x.type);
      expect_type(Cm, op, "Cm", x.type);
      expect_type(z, op, "z", x.type);
      expect_type(A, op, "A", kF32);
      expect_type(D, op, "D", kF32);
      expect_type(bias, op, "dt_bias", kF32);
      expect_type(st, op, "state_in", kF32);
      a.x = x.data;
      a.dt = dt.data;
      a.A = static_cast<const float*>(A.data);
      a.Bm = Bm.data;
      a.Cm = Cm.data;
      a.D = static_cast<const float*>(D.data);
      a.z = z.data;
      a.dt_bias = static_cast<const float*>(bias.data);
      a.state_in = static_cast<const float*>(st.data);
      a.delta_softplus = softplus;
      a.y = output(ctx, 0, {a.B, a.L, a.E});
      a.state_out = static_cast<float*>(output(ctx, 1, {a.B, a.E, a.N}));
      if (ep == Ep::cpu) {
        selective_scan_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::selective_scan(a, stream);
#endif
      }
    });
  }
};

OrtStatusPtr infer_scan(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape x, A;
  if (OrtStatus* st = get_type_shape(ctx, 0, x)) return st;
  if (OrtStatus* st = get_type_shape(ctx, 2, A)) return st;
  if (OrtStatus* st = set_type_shape(ctx, 0, x)) return st;
  if (x.dims.size() == 3 && A.dims.size() == 2) {
    TypeShape s;
    s.type = kF32;
    s.dims = {x.dims[0], x.dims[2], A.dims[1]};
    s.syms = {x.syms[0], x.syms[2], A.syms[1]};
    if (OrtStatus* st = set_type_shape(ctx, 1, s)) return st;
  }
  return nullptr;
}

struct ScanOp : Ort::CustomOpBase<ScanOp, ScanKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  ScanOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_scan; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("SelectiveScan", [&] { *kernel = new ScanKernel(info, ep_); });
  }
  const char* GetName() const { return "SelectiveScan"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 9; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return (i == 2 || i == 5 || i == 7 || i == 8) ? kF32 : t_;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i >= 6 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return i == 0 ? t_ : kF32; }
};

// ─── MoE ──────────────────────────────────────────────────────────────────────────────────────────────────────

struct MoeKernel {
  Ep ep;
  MoeArgs attrs;  // k, routing, renormalize, act, glu, layout
#ifdef HUBMOE_WITH_CUDA
  std::unique_ptr<cuda::MoeRunner> runner;
  cuda::MoePath path = cuda::MoePath::automatic;
#endif

  MoeKernel(const OrtKernelInfo* info, Ep e) : ep(e) {
    attrs.k = static_cast<int>(attr_int(info, "k", 0, true, "MoE"));
    attrs.routing = parse_routing(attr_str(info, "routing", "softmax"));
    attrs.renormalize = attr_int(info, "renormalize", 0) != 0;
    attrs.act = parse_activation(attr_str(info, "activation", "silu"));
    attrs.glu = attr_int(info, "glu", 0) != 0;
    attrs.layout = parse_layout(attr_str(info, "layout", "output_major"));
    if (attrs.k < 1) throw OpError("MoE: attribute 'k' must be at least 1, got " + std::to_string(attrs.k));
#ifdef HUBMOE_WITH_CUDA
    if (ep == Ep::cuda) {
      runner.reset(new cuda::MoeRunner());
      if (const char* p = std::getenv("HUBMOE_MOE_PATH")) {  // for experiments: skinny | gemm
        const std::string s = p;
        path = s == "skinny" ? cuda::MoePath::skinny : s == "gemm" ? cuda::MoePath::gemm : cuda::MoePath::automatic;
      }
    }
#endif
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("MoE", [&] {
      const char* op = "MoE";
      TensorIn x = input(ctx, 0), lg = input(ctx, 1), f1 = input(ctx, 2), b1 = input(ctx, 3), f2 = input(ctx, 4),
               b2 = input(ctx, 5), s1 = input(ctx, 6), s2 = input(ctx, 7);
      MoeArgs a = attrs;
      moe_check(x.dims.data(), x.rank(), lg.dims.data(), lg.rank(), f1.dims.data(), f1.rank(), b1.dims.data(),
                b1.rank(), f2.dims.data(), f2.rank(), b2.dims.data(), b2.rank(), a, s1.dims.data(), s1.rank(),
                s2.dims.data(), s2.rank());
      a.dtype = dtype_of(x.type, op);
      if (lg.present() && lg.type != kF32 && lg.type != x.type)
        throw OpError(std::string("MoE: input 'router_logits' is ") + type_name(lg.type) + ", expected float32 or " +
                      type_name(x.type));
      a.logits_dtype = lg.type == kF32 ? DType::f32 : DType::f16;
      expect_type(f1, op, "fc1", x.type);
      expect_type(b1, op, "fc1_bias", x.type);
      expect_type(f2, op, "fc2", x.type);
      expect_type(b2, op, "fc2_bias", x.type);
      expect_type(s1, op, "fc1_scap", kF32);
      expect_type(s2, op, "fc2_scap", kF32);
      a.x = x.data;
      a.logits = lg.data;
      a.fc1 = f1.data;
      a.fc1_bias = b1.data;
      a.fc2 = f2.data;
      a.fc2_bias = b2.data;
      a.fc1_scap = static_cast<const float*>(s1.data);
      a.fc2_scap = static_cast<const float*>(s2.data);
      a.y = output(ctx, 0, x.dims);  // y has the shape of x: [..., H]
      if (a.S == 0) return;
      if (ep == Ep::cpu) {
        moe_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        const cuda::MoePath p = runner->resolve(a, path);
        const size_t bytes = runner->workspace_bytes(a, p);
        Scratch scratch(ctx, x.value, bytes, "MoE");
        runner->run(a, scratch.p, bytes, stream, p);
#endif
      }
    });
  }
};

OrtStatusPtr infer_moe(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape x;
  if (OrtStatus* st = get_type_shape(ctx, 0, x)) return st;
  return set_type_shape(ctx, 0, x);
}

struct MoeOp : Ort::CustomOpBase<MoeOp, MoeKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  MoeOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_moe; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("MoE", [&] { *kernel = new MoeKernel(info, ep_); });
  }
  const char* GetName() const { return "MoE"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 8; }
  // router_logits may be float32 or T: left open here and checked by the kernel. fc1_scap, fc2_scap: float32.
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED : i >= 6 ? kF32 : t_;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    // router_logits (1) is absent with routing "none" (a dense MLP as one expert).
    return (i == 1 || i == 3 || i == 5 || i >= 6) ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return t_; }
};

// ─── SparseLinear ─────────────────────────────────────────────────────────────────────────────────────────────

// A fully-connected op's inputs x, W, bias (T) and its output y [..., N] into args: `check` validates the shapes
// and fills S, K, N. Returns x (its memory names the device for scratch).
template <typename Args>
TensorIn bind_fc(OrtKernelContext* ctx, const char* op, Args& a,
                 void (*check)(const int64_t*, int, const int64_t*, int, const int64_t*, int, Args&)) {
  TensorIn x = input(ctx, 0), w = input(ctx, 1), b = input(ctx, 2);
  check(x.dims.data(), x.rank(), w.dims.data(), w.rank(), b.dims.data(), b.rank(), a);
  a.dtype = dtype_of(x.type, op);
  expect_type(w, op, "W", x.type);
  expect_type(b, op, "bias", x.type);
  a.x = x.data;
  a.W = w.data;
  a.bias = b.data;
  std::vector<int64_t> ydims = x.dims;
  ydims.back() = a.N;
  a.y = output(ctx, 0, ydims);
  return x;
}

struct SparseKernel {
  static constexpr const char* kName = "SparseLinear";
  static constexpr int kNDim = 1;  // W is [K, N]
  Ep ep;
  float mode, threshold;
#ifdef HUBMOE_WITH_CUDA
  std::unique_ptr<cuda::SparseLinearRunner> runner;
  cuda::SparsePath path = cuda::SparsePath::automatic;
#endif

  SparseKernel(const OrtKernelInfo* info, Ep e)
      : ep(e),
        mode(attr_float(info, "mode", 0.f)),
        threshold(attr_float(info, "threshold", 0.f, true, "SparseLinear")) {
    if (std::isnan(mode) || std::isnan(threshold))
      throw OpError("SparseLinear: attributes 'mode' and 'threshold' must not be NaN");
#ifdef HUBMOE_WITH_CUDA
    if (ep == Ep::cuda) {
      runner.reset(new cuda::SparseLinearRunner());
      if (const char* p = std::getenv("HUBMOE_SPARSE_PATH")) {  // for experiments: sparse | dense
        const std::string s = p;
        path = s == "sparse" ? cuda::SparsePath::sparse : s == "dense" ? cuda::SparsePath::dense : cuda::SparsePath::automatic;
      }
    }
#endif
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("SparseLinear", [&] {
      SparseLinearArgs a;
      a.mode = mode;
      a.threshold = threshold;
      const TensorIn x = bind_fc(ctx, kName, a, sparse_linear_check);
      if (a.S == 0 || a.N == 0) return;
      if (ep == Ep::cpu) {
        sparse_linear_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        const cuda::SparsePath p = runner->resolve(a, path);
        const size_t bytes = runner->workspace_bytes(a, p);
        Scratch scratch(ctx, x.value, bytes, "SparseLinear");
        runner->run(a, scratch.p, bytes, stream, p);
#endif
      }
    });
  }
};

// Shape inference and registration shared by the fully-connected ops (SparseLinear, Linear): inputs x [..., K], W
// and an optional bias, all T; output y [..., N] of T, N being W's dim Kernel::kNDim.
template <int NDIM>
OrtStatusPtr infer_fc(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape x, w;
  if (OrtStatus* st = get_type_shape(ctx, 0, x)) return st;
  if (OrtStatus* st = get_type_shape(ctx, 1, w)) return st;
  if (!x.dims.empty() && w.dims.size() == 2) {
    x.dims.back() = w.dims[NDIM];
    x.syms.back() = w.syms[NDIM];
  }
  return set_type_shape(ctx, 0, x);
}

template <typename Kernel>
struct FcOp : Ort::CustomOpBase<FcOp<Kernel>, Kernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  FcOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { this->InferOutputShapeFn = infer_fc<Kernel::kNDim>; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded(Kernel::kName, [&] { *kernel = new Kernel(info, ep_); });
  }
  const char* GetName() const { return Kernel::kName; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return t_; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return t_; }
};

// ─── Linear ───────────────────────────────────────────────────────────────────────────────────────────────────

struct LinearKernel {
  static constexpr const char* kName = "Linear";
  static constexpr int kNDim = 0;  // W is [N, K]
  Ep ep;
#ifdef HUBMOE_WITH_CUDA
  std::unique_ptr<cuda::LinearRunner> runner;
  cuda::LinearPath path = cuda::LinearPath::automatic;
#endif

  LinearKernel(const OrtKernelInfo*, Ep e) : ep(e) {
#ifdef HUBMOE_WITH_CUDA
    if (ep == Ep::cuda) {
      runner.reset(new cuda::LinearRunner());
      if (const char* p = std::getenv("HUBMOE_LINEAR_PATH")) {  // for experiments: gemv | gemm
        const std::string s = p;
        path = s == "gemv" ? cuda::LinearPath::gemv : s == "gemm" ? cuda::LinearPath::gemm : cuda::LinearPath::automatic;
      }
    }
#endif
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("Linear", [&] {
      LinearArgs a;
      bind_fc(ctx, kName, a, linear_check);
      if (a.S == 0 || a.N == 0) return;
      if (ep == Ep::cpu) {
        linear_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        runner->run(a, stream, path);
#endif
      }
    });
  }
};

// ─── NextToken ────────────────────────────────────────────────────────────────────────────────────────────────

struct NextTokenKernel {
  Ep ep;
  int64_t vocab;
  NextTokenKernel(const OrtKernelInfo* info, Ep e) : ep(e), vocab(attr_int(info, "vocab", 0, true, "NextToken")) {
    if (vocab < 1) throw OpError("NextToken: attribute 'vocab' must be at least 1, got " + std::to_string(vocab));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("NextToken", [&] {
      TensorIn l = input(ctx, 0);
      NextTokenArgs a;
      next_token_check(l.dims.data(), l.rank(), vocab, a);
      a.dtype = dtype_of(l.type, "NextToken");
      a.logits = l.data;
      a.next = static_cast<int64_t*>(output(ctx, 0, {a.B}));
      if (a.B == 0) return;
      if (ep == Ep::cpu) {
        next_token_cpu(a);
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::next_token(a, stream);
#endif
      }
    });
  }
};

OrtStatusPtr infer_next_token(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape l;
  if (OrtStatus* st = get_type_shape(ctx, 0, l)) return st;
  TypeShape out;
  out.type = kI64;
  out.dims = {l.dims.empty() ? -1 : l.dims[0]};
  out.syms = {l.syms.empty() ? std::string() : l.syms[0]};
  return set_type_shape(ctx, 0, out);
}

struct NextTokenOp : Ort::CustomOpBase<NextTokenOp, NextTokenKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  NextTokenOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_next_token; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("NextToken", [&] { *kernel = new NextTokenKernel(info, ep_); });
  }
  const char* GetName() const { return "NextToken"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return t_; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return kI64; }
};

// ─── SplitRMSNorm ──────────────────────────────────────────────────────────────────────────────────────────────

struct SplitRmsNormKernel {
  Ep ep;
  float eps;
  SplitRmsNormKernel(const OrtKernelInfo* info, Ep e) : ep(e), eps(attr_float(info, "epsilon", 1e-6f, false, "SplitRMSNorm")) {
    if (!(eps >= 0.f)) throw OpError("SplitRMSNorm: attribute 'epsilon' must be non-negative, got " + std::to_string(eps));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("SplitRMSNorm", [&] {
      TensorIn x = input(ctx, 0);
      TensorIn w[kSplitRmsMaxGroups];
      int G = 0;
      for (int g = 0; g < kSplitRmsMaxGroups; ++g) {
        w[g] = input(ctx, 1 + g);
        if (!w[g].present()) break;
        expect_type(w[g], "SplitRMSNorm", g == 0 ? "w0" : g == 1 ? "w1" : "w2", x.type);
        ++G;
      }
      for (int g = G + 1; g < kSplitRmsMaxGroups; ++g)
        if (input(ctx, 1 + g).present()) throw OpError("SplitRMSNorm: weight " + std::to_string(g) + " is given but weight " + std::to_string(G) + " is not");
      size_t n_out = 0;
      check(api().KernelContext_GetOutputCount(ctx, &n_out));
      if (static_cast<int>(n_out) != G)
        throw OpError("SplitRMSNorm: " + std::to_string(G) + " weight(s) but " + std::to_string(n_out) + " output(s); one output per weight");
      SplitRmsNormArgs a;
      const int64_t* wd[kSplitRmsMaxGroups] = {};
      int wr[kSplitRmsMaxGroups] = {};
      for (int g = 0; g < G; ++g) wd[g] = w[g].dims.data(), wr[g] = w[g].rank();
      split_rms_norm_check(x.dims.data(), x.rank(), G, wd, wr, a);
      a.dtype = dtype_of(x.type, "SplitRMSNorm");
      a.eps = eps;
      a.x = x.data;
      for (int g = 0; g < G; ++g) {
        std::vector<int64_t> dims = x.dims;
        dims.back() = a.len[g];
        a.w[g] = w[g].data;
        a.y[g] = output(ctx, g, dims);
      }
      if (a.rows == 0) return;
      if (ep == Ep::cpu) {
        split_rms_norm_cpu(a);
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::split_rms_norm(a, stream);
#endif
      }
    });
  }
};

OrtStatusPtr infer_split_rms(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape x;
  if (OrtStatus* e = get_type_shape(ctx, 0, x)) return e;
  size_t n_in = 0;
  if (OrtStatus* e = api().ShapeInferContext_GetInputCount(ctx, &n_in)) return e;
  for (size_t g = 0; g + 1 < n_in && g < static_cast<size_t>(kSplitRmsMaxGroups); ++g) {
    TypeShape w;
    if (OrtStatus* e = get_type_shape(ctx, 1 + g, w)) {  // an absent weight: the kernel reports it at run
      api().ReleaseStatus(e);
      break;
    }
    TypeShape y = x;
    if (!y.dims.empty() && w.dims.size() == 1) y.dims.back() = w.dims[0], y.syms.back() = w.syms[0];
    if (OrtStatus* e = set_type_shape(ctx, g, y)) return e;
  }
  return nullptr;
}

struct SplitRmsNormOp : Ort::CustomOpBase<SplitRmsNormOp, SplitRmsNormKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  SplitRmsNormOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_split_rms; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("SplitRMSNorm", [&] { *kernel = new SplitRmsNormKernel(info, ep_); });
  }
  const char* GetName() const { return "SplitRMSNorm"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 1 + kSplitRmsMaxGroups; }
  ONNXTensorElementDataType GetInputType(size_t) const { return t_; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i <= 1 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return kSplitRmsMaxGroups; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return t_; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return i == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
};

// ─── SkipRMSNorm ───────────────────────────────────────────────────────────────────────────────────────────────

// Whether the node names input (or output) i: an empty name or a trailing one left out is absent.
bool node_names(const OrtKernelInfo* info, size_t i, bool output) {
  size_t n = 0;
  check(output ? api().KernelInfo_GetOutputCount(info, &n) : api().KernelInfo_GetInputCount(info, &n));
  if (i >= n) return false;
  size_t size = 0;
  check(output ? api().KernelInfo_GetOutputName(info, i, nullptr, &size) : api().KernelInfo_GetInputName(info, i, nullptr, &size));
  return size > 1;  // the name's length with its terminating null
}

struct SkipRmsNormKernel {
  Ep ep;
  float eps;
  bool sum;  // the node has output 'sum'
  SkipRmsNormKernel(const OrtKernelInfo* info, Ep e)
      : ep(e), eps(attr_float(info, "epsilon", 1e-6f)), sum(node_names(info, 1, true)) {
    if (!(eps >= 0.f)) throw OpError("SkipRMSNorm: attribute 'epsilon' must be a number >= 0, got " + std::to_string(eps));
    if (sum && !node_names(info, 1, false))
      throw OpError("SkipRMSNorm: output 'sum' (x + skip) is requested, but input 'skip' is absent");
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("SkipRMSNorm", [&] {
      const char* op = "SkipRMSNorm";
      TensorIn x = input(ctx, 0), skip = input(ctx, 1), w = input(ctx, 2);
      SkipRmsNormArgs a;
      a.dtype = dtype_of(x.type, op);
      expect_type(skip, op, "skip", x.type);  // skip and weight are declared of any type: a mismatch is reported here
      expect_type(w, op, "weight", x.type);
      skip_rms_norm_check(x.dims.data(), x.rank(), skip.dims.data(), skip.rank(), w.dims.data(), w.rank(), sum, a);
      a.eps = eps;
      a.x = x.data, a.skip = skip.present() ? skip.data : nullptr, a.w = w.data;
      a.y = output(ctx, 0, x.dims);
      if (sum) a.sum = output(ctx, 1, x.dims);
      if (a.rows == 0 || a.D == 0) return;
      if (ep == Ep::cpu) {
        skip_rms_norm_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::skip_rms_norm(a, stream);
#endif
      }
    });
  }
};

// y: x's type and shape. ONNX Runtime's own inference for custom ops gives every output of the node the kernel's T,
// so `sum` has its type; its shape is left open: a shape-inference context cannot tell whether the node has a second
// output, and setting one it lacks would write past ORT's list of the node's outputs. The context also hands out an
// input of unknown shape as rank 0, which x cannot be: then y takes skip's shape (the fused graph's x is the previous
// norm's sum, its skip the block's output), or keeps the type alone when neither is known.
OrtStatusPtr infer_skip_rms(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape x;
  if (OrtStatus* e = get_type_shape(ctx, 0, x)) return e;
  if (x.dims.empty()) {
    TypeShape skip;
    if (OrtStatus* e = get_type_shape(ctx, 1, skip)) {  // skip absent
      api().ReleaseStatus(e);
      return nullptr;
    }
    if (skip.dims.empty()) return nullptr;
    x.dims = skip.dims, x.syms = skip.syms;
  }
  return set_type_shape(ctx, 0, x);
}

struct SkipRmsNormOp : Ort::CustomOpBase<SkipRmsNormOp, SkipRmsNormKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  SkipRmsNormOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_skip_rms; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("SkipRMSNorm", [&] { *kernel = new SkipRmsNormKernel(info, ep_); });
  }
  const char* GetName() const { return "SkipRMSNorm"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 3; }
  // x is T; skip and weight are left open here and checked by the kernel, which names the one of the wrong type.
  ONNXTensorElementDataType GetInputType(size_t i) const { return i == 0 ? t_ : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return t_; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return i == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
};

// ─── StaticAttentionMask ───────────────────────────────────────────────────────────────────────────────────────

struct StaticMaskKernel {
  Ep ep;
  int64_t groups;
  StaticMaskKernel(const OrtKernelInfo* info, Ep e) : ep(e), groups(attr_int(info, "groups", 1, false, "StaticAttentionMask")) {
    if (groups < 1) throw OpError("StaticAttentionMask: attribute 'groups' must be at least 1, got " + std::to_string(groups));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("StaticAttentionMask", [&] {
      TensorIn m = input(ctx, 0), p = input(ctx, 1);
      if (m.type != kI64) throw OpError("StaticAttentionMask: input 'attention_mask' must be int64");
      if (p.type != kI64) throw OpError("StaticAttentionMask: input 'cache_position' must be int64");
      StaticMaskArgs a;
      static_mask_check(m.dims.data(), m.rank(), p.dims.data(), p.rank(), a);
      a.groups = groups;
      a.mask = static_cast<const int64_t*>(m.data);
      a.position = static_cast<const int64_t*>(p.data);
      size_t n_out = 0;
      check(api().KernelContext_GetOutputCount(ctx, &n_out));
      a.bias = static_cast<float*>(output(ctx, 0, {a.B, 1, groups * a.T, a.S}));
      if (n_out > 1) a.is_new = static_cast<bool*>(output(ctx, 1, {1, 1, a.S, 1}));
      if (n_out > 2) a.source = static_cast<int64_t*>(output(ctx, 2, {a.S}));
      if (ep == Ep::cpu) {
        static_mask_cpu(a);
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::static_mask(a, stream);
#endif
      }
    });
  }
};

struct StaticMaskOp : Ort::CustomOpBase<StaticMaskOp, StaticMaskKernel, true> {
  Ep ep_;
  explicit StaticMaskOp(Ep ep) : ep_(ep) {}
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("StaticAttentionMask", [&] { *kernel = new StaticMaskKernel(info, ep_); });
  }
  const char* GetName() const { return "StaticAttentionMask"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const { return kI64; }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t i) const {
    return i == 0 ? kF32 : i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL : kI64;
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return i == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
};

// ─── MambaConv ─────────────────────────────────────────────────────────────────────────────────────────────────

struct MambaConvKernel {
  Ep ep;
  explicit MambaConvKernel(Ep e) : ep(e) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("MambaConv", [&] {
      TensorIn xz = input(ctx, 0), mask = input(ctx, 1), w = input(ctx, 2), bias = input(ctx, 3), st = input(ctx, 4);
      expect_type(mask, "MambaConv", "mask", xz.type);
      expect_type(w, "MambaConv", "weight", xz.type);
      expect_type(bias, "MambaConv", "bias", xz.type);
      expect_type(st, "MambaConv", "state", xz.type);
      if (!st.present()) throw OpError("MambaConv: input 'state' is required");
      MambaConvArgs a;
      mamba_conv_check(xz.dims.data(), xz.rank(), mask.dims.data(), mask.rank(), w.dims.data(), w.rank(), bias.dims.data(),
                       bias.rank(), st.dims.data(), st.rank(), a);
      a.dtype = dtype_of(xz.type, "MambaConv");
      a.xz = xz.data, a.mask = mask.data, a.weight = w.data, a.bias = bias.present() ? bias.data : nullptr, a.state = st.data;
      a.u = output(ctx, 0, {a.B, a.T, a.E});
      a.z = output(ctx, 1, {a.B, a.T, a.E});
      a.state_out = output(ctx, 2, {a.B, a.E, a.K - 1});
      if (ep == Ep::cpu) {
        mamba_conv_cpu(a);
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        cuda::mamba_conv(a, stream);
#endif
      }
    });
  }
};

OrtStatusPtr infer_mamba_conv(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape xz, st;
  if (OrtStatus* e = get_type_shape(ctx, 0, xz)) return e;
  if (OrtStatus* e = get_type_shape(ctx, 4, st)) return e;
  if (xz.dims.size() == 3) {
    TypeShape u = xz;
    u.dims[2] = xz.dims[2] >= 0 ? xz.dims[2] / 2 : -1;
    u.syms[2] = "";
    if (OrtStatus* e = set_type_shape(ctx, 0, u)) return e;
    if (OrtStatus* e = set_type_shape(ctx, 1, u)) return e;
  }
  return set_type_shape(ctx, 2, st);
}

struct MambaConvOp : Ort::CustomOpBase<MambaConvOp, MambaConvKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  MambaConvOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_mamba_conv; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo*, void** kernel) const {
    return guarded("MambaConv", [&] { *kernel = new MambaConvKernel(ep_); });
  }
  const char* GetName() const { return "MambaConv"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t) const { return t_; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return t_; }
};

// ─── MambaMixer ────────────────────────────────────────────────────────────────────────────────────────────────

struct MambaMixerKernel {
  Ep ep;
  float eps;
#ifdef HUBMOE_WITH_CUDA
  std::unique_ptr<cuda::MambaMixerRunner> runner;
  bool allow_decode = true;
#endif
  MambaMixerKernel(const OrtKernelInfo* info, Ep e) : ep(e), eps(attr_float(info, "epsilon", 1e-6f)) {
    if (!(eps >= 0.f)) throw OpError("MambaMixer: attribute 'epsilon' must be a number >= 0");
#ifdef HUBMOE_WITH_CUDA
    if (ep == Ep::cuda) {
      runner.reset(new cuda::MambaMixerRunner());
      if (const char* p = std::getenv("HUBMOE_MIXER_PATH")) allow_decode = std::string(p) != "chain";  // experiments
    }
#endif
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept {
    return guarded("MambaMixer", [&] {
      const char* op = "MambaMixer";
      TensorIn in[14];
      for (size_t i = 0; i < 14; ++i) in[i] = input(ctx, i);
      const TensorIn &xz = in[0], &mask = in[1], &cw = in[2], &cb = in[3], &cs = in[4], &xp = in[5], &dp = in[6],
                     &dbias = in[7], &A = in[8], &D = in[9], &ss = in[10];
      static const char* const kNames[14] = {"xz", "mask", "conv_weight", "conv_bias", "conv_state", "x_proj", "dt_proj",
                                             "dt_bias", "A", "D", "ssm_state", "dt_norm", "b_norm", "c_norm"};
      for (size_t i : {1, 2, 3, 4, 5, 6, 11, 12, 13}) expect_type(in[i], op, kNames[i], xz.type);
      for (size_t i : {7, 8, 9, 10}) expect_type(in[i], op, kNames[i], kF32);
      const ShapeRef norms[3] = {in[11].shape(), in[12].shape(), in[13].shape()};
      MambaMixerArgs a;
      mamba_mixer_check(xz.shape(), mask.shape(), cw.shape(), cb.shape(), cs.shape(), xp.shape(), dp.shape(),
                        dbias.shape(), A.shape(), D.shape(), ss.shape(), norms, a);
      a.dtype = dtype_of(xz.type, op);
      a.eps = eps;
      a.xz = xz.data, a.mask = mask.data, a.conv_weight = cw.data, a.conv_bias = cb.present() ? cb.data : nullptr;
      a.conv_state = cs.data, a.x_proj = xp.data, a.dt_proj = dp.data;
      a.dt_bias = dbias.present() ? static_cast<const float*>(dbias.data) : nullptr;
      a.A = static_cast<const float*>(A.data), a.D = static_cast<const float*>(D.data);
      a.ssm_state = static_cast<const float*>(ss.data);
      for (int g = 0; g < 3; ++g) a.norm[g] = in[11 + g].present() ? in[11 + g].data : nullptr;
      a.y = output(ctx, 0, {a.B, a.T, a.E});
      a.conv_state_out = output(ctx, 1, {a.B, a.E, a.K - 1});
      a.ssm_state_out = static_cast<float*>(output(ctx, 2, {a.B, a.E, a.N}));
      if (ep == Ep::cpu) {
        mamba_mixer_cpu(a, OrtParallel(ctx));
      } else {
#ifdef HUBMOE_WITH_CUDA
        void* stream = gpu_stream(ctx);
        const size_t bytes = runner->workspace_bytes(a, allow_decode);
        Scratch scratch(ctx, xz.value, bytes, op);
        runner->run(a, scratch.p, bytes, stream, allow_decode);
#endif
      }
    });
  }
};

OrtStatusPtr infer_mamba_mixer(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  TypeShape xz, cs, ss;
  if (OrtStatus* e = get_type_shape(ctx, 0, xz)) return e;
  if (OrtStatus* e = get_type_shape(ctx, 4, cs)) return e;
  if (OrtStatus* e = get_type_shape(ctx, 10, ss)) return e;
  if (xz.dims.size() == 3) {
    TypeShape y = xz;
    y.dims[2] = xz.dims[2] >= 0 ? xz.dims[2] / 2 : -1;
    y.syms[2] = "";
    if (OrtStatus* e = set_type_shape(ctx, 0, y)) return e;
  }
  if (OrtStatus* e = set_type_shape(ctx, 1, cs)) return e;
  return set_type_shape(ctx, 2, ss);
}

struct MambaMixerOp : Ort::CustomOpBase<MambaMixerOp, MambaMixerKernel, true> {
  Ep ep_;
  ONNXTensorElementDataType t_;
  MambaMixerOp(Ep ep, ONNXTensorElementDataType t) : ep_(ep), t_(t) { OrtCustomOp::InferOutputShapeFn = infer_mamba_mixer; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return guarded("MambaMixer", [&] { *kernel = new MambaMixerKernel(info, ep_); });
  }
  const char* GetName() const { return "MambaMixer"; }
  const char* GetExecutionProviderType() const { return ep_name(ep_); }
  size_t GetInputTypeCount() const { return 14; }
  ONNXTensorElementDataType GetInputType(size_t i) const { return (i >= 7 && i <= 10) ? kF32 : t_; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return (i == 3 || i == 7 || i >= 11) ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return i == 2 ? kF32 : t_; }
};

// ─── Registration ─────────────────────────────────────────────────────────────────────────────────────────────

struct OpSet {
  std::vector<std::unique_ptr<OrtCustomOp>> ops;
  OpSet() {
    std::vector<Ep> eps{Ep::cpu};
#ifdef HUBMOE_WITH_CUDA
    eps.push_back(Ep::cuda);
#endif
    for (Ep ep : eps) {
      ops.emplace_back(new StaticMaskOp(ep));
      for (ONNXTensorElementDataType t : {kF32, kF16}) {
        ops.emplace_back(new ScanOp(ep, t));
        ops.emplace_back(new MoeOp(ep, t));
        ops.emplace_back(new FcOp<SparseKernel>(ep, t));
        ops.emplace_back(new FcOp<LinearKernel>(ep, t));
        ops.emplace_back(new NextTokenOp(ep, t));
        ops.emplace_back(new SplitRmsNormOp(ep, t));
        ops.emplace_back(new SkipRmsNormOp(ep, t));
        ops.emplace_back(new MambaConvOp(ep, t));
        ops.emplace_back(new MambaMixerOp(ep, t));
      }
    }
  }
};

std::mutex g_mutex;
std::vector<Ort::CustomOpDomain>* g_domains = nullptr;  // kept alive for the sessions that use them

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* a = api_base->GetApi(ORT_API_VERSION);
  if (!a) {
    const OrtApi* any = api_base->GetApi(1);
    const std::string m = std::string("hubmoe ops need ONNX Runtime API version ") + std::to_string(ORT_API_VERSION) +
                          " (ORT >= 1." + std::to_string(ORT_API_VERSION) + "); this runtime is " +
                          api_base->GetVersionString();
    return any ? any->CreateStatus(ORT_FAIL, m.c_str()) : nullptr;
  }
  Ort::InitApi(a);
  try {
    static OpSet opset;
    Ort::CustomOpDomain domain(kDomain);
    for (const auto& op : opset.ops) domain.Add(op.get());
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_domains) g_domains = new std::vector<Ort::CustomOpDomain>();
    g_domains->push_back(std::move(domain));
    return nullptr;
  } catch (const std::exception& e) {
    return a->CreateStatus(ORT_FAIL, (std::string("hubmoe RegisterCustomOps: ") + e.what()).c_str());
  }
}
