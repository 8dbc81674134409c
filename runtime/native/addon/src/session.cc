// Sessions: creation on a worker thread (custom-op library, CUDA provider options) and run() with
// IO binding, on a worker thread, resolving to host tensors and device values.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <set>

#include "hubmoe.h"

namespace hubmoe {

Executor::Executor() : thread_([this] { Loop(); }) {}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
  else thread_.join();
}

void Executor::Loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

void Executor::Call(const std::function<void()>& job) {
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back([&] {
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> l(done_mu);
      done = true;
      done_cv.notify_all();
    });
  }
  cv_.notify_all();
  std::unique_lock<std::mutex> lock(done_mu);
  done_cv.wait(lock, [&] { return done; });
  if (error) std::rethrow_exception(error);
}

namespace {

std::string Join(const std::vector<std::string>& xs) {
  std::string s;
  for (const auto& x : xs) s += (s.empty() ? "" : ", ") + x;
  return s;
}

bool Contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

// Session options read from JS on the main thread, applied on the worker.
struct SessionConfig {
  std::string model_path;
  std::string device = "cpu";
  int device_id = 0;
  int threads = 0;
  int log_severity = -1;
  GraphOptimizationLevel opt_level = ORT_ENABLE_ALL;
  std::string custom_ops_library;
  std::string profile_prefix;
  std::vector<std::pair<std::string, std::string>> cuda_options;
  std::vector<std::pair<std::string, int64_t>> free_dims;
  std::vector<std::pair<std::string, std::string>> config_entries;
};

std::string OptionString(Napi::Value v, const std::string& what) {
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "1" : "0";
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return std::to_string(static_cast<int64_t>(d));
    return v.ToString().Utf8Value();
  }
  throw ArgumentError(what + " must be a string, number or boolean");
}

int IntOption(Napi::Object o, const char* key, int lo, int hi, int dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : lo - 1.0;
  if (!(d >= lo && d <= hi) || d != static_cast<double>(static_cast<int>(d))) {
    throw ArgumentError(std::string(key) + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  return static_cast<int>(d);
}

std::string StringOption(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return "";
  if (!v.IsString()) throw ArgumentError(std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::vector<std::pair<std::string, std::string>> StringMap(Napi::Object o, const char* key) {
  std::vector<std::pair<std::string, std::string>> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsObject() || v.IsArray()) throw ArgumentError(std::string(key) + " must be an object of string values");
  Napi::Object m = v.As<Napi::Object>();
  Napi::Array keys = m.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    std::string k = keys.Get(i).ToString().Utf8Value();
    out.emplace_back(k, OptionString(m.Get(k), std::string(key) + "." + k));
  }
  return out;
}

SessionConfig ReadConfig(const Napi::CallbackInfo& info) {
  SessionConfig c;
  if (info.Length() < 1 || !info[0].IsString()) throw ArgumentError("createSession(modelPath, options): modelPath must be a string");
  c.model_path = info[0].As<Napi::String>().Utf8Value();
  if (info.Length() < 2 || info[1].IsUndefined()) return c;
  if (!info[1].IsObject()) throw ArgumentError("createSession(modelPath, options): options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  std::string device = StringOption(o, "device");
  if (!device.empty()) c.device = device;
  if (c.device != "cpu" && c.device != "cuda") throw ArgumentError("device must be 'cpu' or 'cuda' (got '" + c.device + "')");
  c.device_id = IntOption(o, "deviceId", 0, 1023, 0);
  c.threads = IntOption(o, "threads", 0, 4096, 0);
  c.log_severity = IntOption(o, "logSeverity", 0, 4, -1);
  std::string level = StringOption(o, "graphOptimizationLevel");
  if (level.empty() || level == "all") c.opt_level = ORT_ENABLE_ALL;
  else if (level == "disabled") c.opt_level = ORT_DISABLE_ALL;
  else if (level == "basic") c.opt_level = ORT_ENABLE_BASIC;
  else if (level == "extended") c.opt_level = ORT_ENABLE_EXTENDED;
  else throw ArgumentError("graphOptimizationLevel must be 'disabled', 'basic', 'extended' or 'all' (got '" + level + "')");
  c.custom_ops_library = StringOption(o, "customOpsLibrary");
  c.profile_prefix = StringOption(o, "profileFile");
  c.cuda_options = StringMap(o, "cudaOptions");
  c.config_entries = StringMap(o, "config");
  Napi::Value fd = o.Get("freeDimensionOverrides");
  if (!fd.IsUndefined() && !fd.IsNull()) {
    if (!fd.IsObject() || fd.IsArray()) throw ArgumentError("freeDimensionOverrides must be an object of dim name → size");
    Napi::Object m = fd.As<Napi::Object>();
    Napi::Array keys = m.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string k = keys.Get(i).ToString().Utf8Value();
      Napi::Value x = m.Get(k);
      double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d))) {
        throw ArgumentError("freeDimensionOverrides." + k + " must be a non-negative integer");
      }
      c.free_dims.emplace_back(k, static_cast<int64_t>(d));
    }
  }
  if (c.device != "cuda" && !c.cuda_options.empty()) throw ArgumentError("cudaOptions are only for device 'cuda'");
  return c;
}

std::vector<ValueInfo> DescribeValues(Ort::Session& s, bool inputs) {
  Ort::AllocatorWithDefaultOptions alloc;
  const size_t n = inputs ? s.GetInputCount() : s.GetOutputCount();
  std::vector<ValueInfo> out(n);
  for (size_t i = 0; i < n; ++i) {
    ValueInfo& vi = out[i];
    vi.name = (inputs ? s.GetInputNameAllocated(i, alloc) : s.GetOutputNameAllocated(i, alloc)).get();
    Ort::TypeInfo ti = inputs ? s.GetInputTypeInfo(i) : s.GetOutputTypeInfo(i);
    if (ti.GetONNXType() != ONNX_TYPE_TENSOR) continue;
    vi.is_tensor = true;
    auto t = ti.GetTensorTypeAndShapeInfo();
    vi.type = t.GetElementType();
    vi.shape = t.GetShape();
    std::vector<const char*> sym(vi.shape.size(), nullptr);
    if (!sym.empty()) t.GetSymbolicDimensions(sym.data(), sym.size());
    for (const char* p : sym) vi.symbolic.emplace_back(p ? p : "");
  }
  return out;
}

// Where a failure happened, for the JS wrapper's message: 'options', 'custom_ops', 'cuda', 'cuda_options', 'load'.
struct StageError : std::runtime_error {
  StageError(std::string stage, std::string msg, int ort_code)
      : std::runtime_error(std::move(msg)), stage(std::move(stage)), ort_code(ort_code) {}
  std::string stage;
  int ort_code;
};

template <typename F>
void Stage(const char* stage, F&& f) {
  try {
    f();
  } catch (const Ort::Exception& e) {
    throw StageError(stage, e.what(), static_cast<int>(e.GetOrtErrorCode()));
  } catch (const StageError&) {
    throw;
  } catch (const std::exception& e) {
    throw StageError(stage, e.what(), -1);
  }
}

class CreateWorker : public Napi::AsyncWorker {
 public:
  CreateWorker(Napi::Env env, Napi::Promise::Deferred deferred, SessionConfig config)
      : Napi::AsyncWorker(env, "hubmoe:createSession"), deferred_(deferred), config_(std::move(config)) {}

  void Execute() override {
    try {
      Ort::Env& env = ProcessEnv();
      Ort::SessionOptions so{nullptr};
      Stage("options", [&] {
        so = Ort::SessionOptions();
        so.SetGraphOptimizationLevel(config_.opt_level);
        if (config_.threads > 0) so.SetIntraOpNumThreads(config_.threads);
        if (config_.log_severity >= 0) so.SetLogSeverityLevel(config_.log_severity);
        if (!config_.profile_prefix.empty()) so.EnableProfiling(config_.profile_prefix.c_str());
        for (const auto& [name, size] : config_.free_dims) {
          Ort::ThrowOnError(Ort::GetApi().AddFreeDimensionOverrideByName(so, name.c_str(), size));
        }
        for (const auto& [k, v] : config_.config_entries) so.AddConfigEntry(k.c_str(), v.c_str());
      });
      if (!config_.custom_ops_library.empty()) {
        Stage("custom_ops", [&] { so.RegisterCustomOpsLibrary(config_.custom_ops_library.c_str()); });
      }
      if (config_.device == "cuda") {
        const OrtApi& api = Ort::GetApi();
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> guard(nullptr, api.ReleaseCUDAProviderOptions);
        // Creating the options already loads the CUDA provider library; updating them checks the keys.
        Stage("cuda", [&] {
          Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
          guard.reset(cuda);
        });
        Stage("cuda_options", [&] {
          std::vector<const char*> keys{"device_id"}, values;
          std::string id = std::to_string(config_.device_id);
          values.push_back(id.c_str());
          for (const auto& [k, v] : config_.cuda_options) {
            if (k == "device_id") continue;  // deviceId is the one source of truth
            keys.push_back(k.c_str());
            values.push_back(v.c_str());
          }
          Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys.data(), values.data(), keys.size()));
        });
        Stage("cuda", [&] { so.AppendExecutionProvider_CUDA_V2(*cuda); });
      }
      auto core = std::make_shared<SessionCore>();
      core->device = config_.device;
      core->device_id = config_.device_id;
      for (const auto& [k, v] : config_.cuda_options) {
        if (k == "enable_cuda_graph" && v != "0" && v != "false") core->cuda_graph = true;
      }
      auto load = [&] {
        core->session = std::make_unique<Ort::Session>(env, config_.model_path.c_str(), so);
        core->inputs = DescribeValues(*core->session, true);
        core->outputs = DescribeValues(*core->session, false);
      };
      if (core->cuda_graph) {
        // Captured graphs belong to the thread that ran them: this session's ORT calls all go to one thread.
        core->executor = std::make_unique<Executor>();
        Stage("load", [&] { core->executor->Call(load); });
      } else {
        Stage("load", load);
      }
      core_ = std::move(core);
    } catch (const StageError& e) {
      stage_ = e.stage;
      ort_code_ = e.ort_code;
      SetError(e.what());
    } catch (const std::exception& e) {
      stage_ = "load";
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(Session::Wrap(env, std::move(core_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Napi::Error err = MakeError(env, "ORT", e.Message(), ort_code_);
    err.Set("stage", Napi::String::New(env, stage_));
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  SessionConfig config_;
  std::shared_ptr<SessionCore> core_;
  std::string stage_;
  int ort_code_ = -1;
};

struct Feed {
  std::string name;
  HostFeed host;                       // a host tensor over JS memory, or
  std::shared_ptr<HeldValue> device;   // a device value from an earlier run
};

// An output written into a value the caller holds (allocate(), or an earlier run's output).
struct Bound {
  std::string name;
  std::shared_ptr<HeldValue> value;
};

class RunWorker : public SessionWorker {
 public:
  RunWorker(Napi::Env env, Napi::Promise::Deferred deferred, Napi::Object self, std::shared_ptr<SessionCore> core,
            std::vector<Feed> feeds, std::vector<std::string> outputs, std::set<std::string> on_device,
            std::vector<Bound> bound, std::string graph_id)
      : SessionWorker(env, "hubmoe:run"),
        deferred_(deferred),
        self_(Napi::Persistent(self)),
        core_(std::move(core)),
        feeds_(std::move(feeds)),
        outputs_(std::move(outputs)),
        on_device_(std::move(on_device)),
        bound_(std::move(bound)),
        graph_id_(std::move(graph_id)) {
    t_.called = Clock::now();
  }

  void RunOnce() {
    t_.job = Clock::now();
    Ort::Session& s = *core_->session;
    Ort::IoBinding binding(s);
    for (Feed& f : feeds_) binding.BindInput(f.name.c_str(), f.device ? f.device->value : f.host.value);
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    Ort::MemoryInfo device = core_->device == "cuda"
                                 ? Ort::MemoryInfo("Cuda", OrtDeviceAllocator, core_->device_id, OrtMemTypeDefault)
                                 : Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    std::set<std::string> bound_names;
    for (Bound& b : bound_) {
      binding.BindOutput(b.name.c_str(), b.value->value);
      bound_names.insert(b.name);
    }
    for (const std::string& name : outputs_) {
      if (!bound_names.count(name)) binding.BindOutput(name.c_str(), on_device_.count(name) ? device : cpu);
    }
    Ort::RunOptions ro;
    if (!graph_id_.empty()) ro.AddConfigEntry("gpu_graph_id", graph_id_.c_str());
    t_.bound = Clock::now();
    s.Run(ro, binding);
    t_.ran = Clock::now();
    binding.SynchronizeOutputs();
    t_.synced = Clock::now();
    std::vector<std::string> names = binding.GetOutputNames();
    std::vector<Ort::Value> values = binding.GetOutputValues();
    for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
      if (bound_names.count(names[i])) continue;  // written in place; the caller holds it
      names_.push_back(std::move(names[i]));
      values_.push_back(std::move(values[i]));
    }
    t_.collected = Clock::now();
  }

  void Execute() override {
    t_.started = Clock::now();
    if (InSession(*core_, [this] { RunOnce(); })) t_.returned = Clock::now();
  }

  void OnOK() override {
    Napi::Env env = Env();
    SetTiming();
    Finish();
    try {
      Napi::Object result = Napi::Object::New(env);
      for (size_t i = 0; i < names_.size() && i < values_.size(); ++i) {
        const std::string& name = names_[i];
        Ort::Value& v = values_[i];
        if (!v.IsTensor()) throw MakeError(env, "ORT", "output " + name + " is not a tensor; only tensor outputs are supported");
        if (on_device_.count(name)) {
          auto held = std::make_shared<HeldValue>();
          held->value = std::move(v);
          held->owner = core_;
          result.Set(name, DeviceValue::Wrap(env, std::move(held)));
          continue;
        }
        auto ts = v.GetTensorTypeAndShapeInfo();
        const ONNXTensorElementDataType type = ts.GetElementType();
        const size_t bytes = ts.GetElementCount() * ElementSize(type);
        // The output's own memory becomes the JS array's (no copy of, say, a prefill's 512 MB of logits).
        void* data = bytes ? v.GetTensorMutableRawData() : nullptr;
        result.Set(name, AdoptHostTensor(env, ElementTypeName(type), type, ts.GetShape(), std::make_unique<OrtBacking>(std::move(v)), data, bytes));
      }
      deferred_.Resolve(result);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const Ort::Exception& e) {
      deferred_.Reject(MakeError(env, "ORT", e.what(), static_cast<int>(e.GetOrtErrorCode())).Value());
    } catch (const std::exception& e) {
      deferred_.Reject(MakeError(env, "ORT", e.what()).Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Finish();
    deferred_.Reject(MakeError(env, "ORT", e.Message(), ort_code_).Value());
  }

 private:
  using Clock = std::chrono::steady_clock;
  // Where the run's wall time went, for bench/step-breakdown.mjs: the session's `lastRunTiming`.
  struct Times {
    Clock::time_point called, started, job, bound, ran, synced, collected, returned;
  } t_;

  void SetTiming() {
    const Clock::time_point settled = Clock::now();
    auto us = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double, std::micro>(b - a).count();
    };
    RunTiming r;
    r.wait = us(t_.called, t_.started);         // run() to a libuv worker starting it (queue, earlier runs)
    r.hand_over = us(t_.started, t_.job);       // worker to the session's thread (CUDA-graph sessions)
    r.bind = us(t_.job, t_.bound);              // the IoBinding of feeds and outputs
    r.run = us(t_.bound, t_.ran);               // ONNX Runtime's Run (a replayed graph: its launch)
    r.sync = us(t_.ran, t_.synced);             // waiting for the outputs (the device work)
    r.collect = us(t_.synced, t_.collected);    // taking the output values
    r.hand_back = us(t_.collected, t_.returned);  // the session's thread back to the worker
    r.settle = us(t_.returned, settled);        // the worker to JavaScript's thread
    Session::Unwrap(self_.Value())->SetLastTiming(r);
  }

  void Finish() {
    Session::Unwrap(self_.Value())->RunFinished();
    feeds_.clear();  // drops the JS array references and device-value holds, on the main thread
    bound_.clear();
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  std::shared_ptr<SessionCore> core_;
  std::vector<Feed> feeds_;
  std::vector<std::string> outputs_;
  std::set<std::string> on_device_;
  std::vector<Bound> bound_;
  std::string graph_id_;
  std::vector<std::string> names_;
  std::vector<Ort::Value> values_;
};

Napi::Object MetadataToJs(Napi::Env env, const std::vector<ValueInfo>& infos) {
  Napi::Array arr = Napi::Array::New(env, infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    const ValueInfo& vi = infos[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", vi.name);
    o.Set("isTensor", Napi::Boolean::New(env, vi.is_tensor));
    if (vi.is_tensor) {
      o.Set("type", ElementTypeName(vi.type));
      Napi::Array shape = Napi::Array::New(env, vi.shape.size());
      for (size_t d = 0; d < vi.shape.size(); ++d) {
        if (!vi.symbolic[d].empty()) shape.Set(static_cast<uint32_t>(d), vi.symbolic[d]);
        else shape.Set(static_cast<uint32_t>(d), Napi::Number::New(env, static_cast<double>(vi.shape[d])));
      }
      o.Set("shape", shape);
    }
    arr.Set(static_cast<uint32_t>(i), o);
  }
  return arr;
}

}  // namespace

Napi::Value CreateSession(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return PromiseOf(env, [&](Napi::Promise::Deferred deferred) {
    EnsureOrt(env);
    auto* w = new CreateWorker(env, deferred, ReadConfig(info));
    w->Queue();
  });
}

Napi::Function Session::Define(Napi::Env env) {
  return DefineClass(env, "Session",
                     {
                         InstanceMethod<&Session::Run>("run"),
                         InstanceMethod<&Session::Greedy>("greedy"),
                         InstanceMethod<&Session::Allocate>("allocate"),
                         InstanceMethod<&Session::Release>("release"),
                         InstanceMethod<&Session::EndProfiling>("endProfiling"),
                         InstanceAccessor<&Session::GetInputNames>("inputNames"),
                         InstanceAccessor<&Session::GetOutputNames>("outputNames"),
                         InstanceAccessor<&Session::GetInputMetadata>("inputMetadata"),
                         InstanceAccessor<&Session::GetOutputMetadata>("outputMetadata"),
                         InstanceAccessor<&Session::GetDevice>("device"),
                         InstanceAccessor<&Session::GetDeviceId>("deviceId"),
                         InstanceAccessor<&Session::GetBusy>("busy"),
                         InstanceAccessor<&Session::GetReleased>("released"),
                         InstanceAccessor<&Session::GetLastRunTiming>("lastRunTiming"),
                         InstanceAccessor<&Session::GetLastGreedyTiming>("lastGreedyTiming"),
                     });
}

Napi::Object Session::Wrap(Napi::Env env, std::shared_ptr<SessionCore> core) {
  auto* data = env.GetInstanceData<AddonData>();
  auto* ptr = new std::shared_ptr<SessionCore>(std::move(core));
  return data->session_ctor.New({Napi::External<std::shared_ptr<SessionCore>>::New(env, ptr)});
}

Session::Session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Session>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "Session cannot be constructed from JavaScript; use createSession()");
  }
  auto* ptr = info[0].As<Napi::External<std::shared_ptr<SessionCore>>>().Data();
  core_ = std::move(*ptr);
  delete ptr;
  device_ = core_->device;
  device_id_ = core_->device_id;
  for (const auto& vi : core_->inputs) input_names_.push_back(vi.name);
  for (const auto& vi : core_->outputs) output_names_.push_back(vi.name);
  input_meta_ = Napi::Persistent(MetadataToJs(env, core_->inputs));
  output_meta_ = Napi::Persistent(MetadataToJs(env, core_->outputs));
}

Napi::Value Session::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return PromiseOf(env, [&](Napi::Promise::Deferred deferred) {
    if (!core_) throw MakeError(env, "RELEASED", "this session was released");
    if (info.Length() < 1 || !info[0].IsObject()) throw ArgumentError("run(feeds, options): feeds must be an object of input name → tensor");
    Napi::Object feeds_obj = info[0].As<Napi::Object>();
    Napi::Array keys = feeds_obj.GetPropertyNames();
    std::vector<Feed> feeds;
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      Feed f;
      f.name = keys.Get(i).ToString().Utf8Value();
      if (!Contains(input_names_, f.name)) {
        throw ArgumentError("the model has no input '" + f.name + "' (its inputs: " + Join(input_names_) + ")");
      }
      Napi::Value v = feeds_obj.Get(f.name);
      if (DeviceValue::Is(env, v)) {
        f.device = DeviceValue::Unwrap(v.As<Napi::Object>())->held();
        if (!f.device) throw MakeError(env, "DISPOSED", "input '" + f.name + "': the device value was disposed and cannot be fed");
      } else {
        f.host = ReadHostTensor(env, f.name, v);
      }
      feeds.push_back(std::move(f));
    }

    std::vector<std::string> outputs = output_names_;
    std::set<std::string> on_device;
    std::vector<Bound> bound;
    std::string graph_id;
    if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
      if (!info[1].IsObject()) throw ArgumentError("run(feeds, options): options must be an object");
      Napi::Object o = info[1].As<Napi::Object>();
      auto names_of = [&](const char* key) -> std::vector<std::string> {
        std::vector<std::string> xs;
        Napi::Value v = o.Get(key);
        if (v.IsUndefined() || v.IsNull()) return xs;
        if (!v.IsArray()) throw ArgumentError(std::string(key) + " must be an array of output names");
        Napi::Array a = v.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
          Napi::Value x = a.Get(i);
          if (!x.IsString()) throw ArgumentError(std::string(key) + " must be an array of output names");
          std::string n = x.As<Napi::String>().Utf8Value();
          if (!Contains(output_names_, n)) {
            throw ArgumentError(std::string(key) + ": the model has no output '" + n + "' (its outputs: " + Join(output_names_) + ")");
          }
          xs.push_back(n);
        }
        return xs;
      };
      if (o.Has("outputs") && !o.Get("outputs").IsUndefined()) outputs = names_of("outputs");
      for (const auto& n : names_of("deviceOutputs")) {
        on_device.insert(n);
        if (!Contains(outputs, n)) outputs.push_back(n);
      }
      Napi::Value bv = o.Get("bind");
      if (!bv.IsUndefined() && !bv.IsNull()) {
        if (!bv.IsObject() || bv.IsArray()) throw ArgumentError("bind must be an object of output name → device value");
        Napi::Object bo = bv.As<Napi::Object>();
        Napi::Array bkeys = bo.GetPropertyNames();
        for (uint32_t i = 0; i < bkeys.Length(); ++i) {
          Bound b;
          b.name = bkeys.Get(i).ToString().Utf8Value();
          if (!Contains(output_names_, b.name)) {
            throw ArgumentError("bind: the model has no output '" + b.name + "' (its outputs: " + Join(output_names_) + ")");
          }
          Napi::Value x = bo.Get(b.name);
          if (!DeviceValue::Is(env, x)) throw ArgumentError("bind." + b.name + " must be a device value (from allocate() or a run)");
          b.value = DeviceValue::Unwrap(x.As<Napi::Object>())->held();
          if (!b.value) throw MakeError(env, "DISPOSED", "bind." + b.name + ": the device value was disposed");
          bound.push_back(std::move(b));
        }
      }
      Napi::Value gv = o.Get("graphId");
      if (!gv.IsUndefined() && !gv.IsNull()) {
        double d = gv.IsNumber() ? gv.As<Napi::Number>().DoubleValue() : -2;
        if (!(d >= -1) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 2147483647.0) {
          throw ArgumentError("graphId must be -1 (no CUDA graph) or a positive integer");
        }
        graph_id = std::to_string(static_cast<int64_t>(d));
      }
    }
    if (core_->cuda_graph) {
      if (graph_id.empty()) graph_id = "-1";  // ORT would otherwise capture this run as graph 0
      if (graph_id != "-1") {
        // A replay touches neither feeds nor fetches: everything must sit at the captured addresses.
        for (const Feed& f : feeds) {
          if (!f.device) throw ArgumentError("graphId " + graph_id + ": input '" + f.name + "' must be a device value (a replayed CUDA graph reads the captured addresses)");
        }
        for (const auto& n : outputs) {
          bool is_bound = std::any_of(bound.begin(), bound.end(), [&](const Bound& b) { return b.name == n; });
          if (!is_bound) throw ArgumentError("graphId " + graph_id + ": output '" + n + "' must be bound to a device value (bind)");
        }
      }
    } else if (!graph_id.empty() && graph_id != "-1") {
      throw ArgumentError("graphId " + graph_id + ": this session was not created with cudaOptions.enable_cuda_graph");
    }
    auto* w = new RunWorker(env, deferred, info.This().As<Napi::Object>(), core_, std::move(feeds), std::move(outputs), std::move(on_device),
                            std::move(bound), std::move(graph_id));
    Enqueue(w);
  });
}

// allocate(type, dims) → a zero-filled device value in the session's device memory, to bind as an output
// (run's `bind`) and feed back; written with DeviceValue.write().
Napi::Value Session::Allocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!core_) throw MakeError(env, "RELEASED", "this session was released");
  return Guard(env, "CUDA", [&]() -> Napi::Value {
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) throw ArgumentError("allocate(type, dims): a type name and a dims array expected");
    const std::string tname = info[0].As<Napi::String>().Utf8Value();
    const ONNXTensorElementDataType type = ElementTypeFromName(tname);
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED || ElementSize(type) == 0) throw ArgumentError("allocate: element type '" + tname + "' is not supported");
    Napi::Array da = info[1].As<Napi::Array>();
    std::vector<int64_t> dims(da.Length());
    for (uint32_t i = 0; i < da.Length(); ++i) {
      Napi::Value d = da.Get(i);
      double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
      if (!(x >= 0) || x != static_cast<double>(static_cast<int64_t>(x)) || x > 4294967296.0) throw ArgumentError("allocate: dims must be non-negative integers");
      dims[i] = static_cast<int64_t>(x);
    }
    auto held = std::make_shared<HeldValue>();
    held->owner = core_;
    if (core_->device == "cuda") {
      {
        std::lock_guard<std::mutex> lock(core_->alloc_mu);
        if (!core_->device_alloc) {
          Ort::MemoryInfo mem("Cuda", OrtDeviceAllocator, core_->device_id, OrtMemTypeDefault);
          core_->device_alloc = std::make_unique<Ort::Allocator>(*core_->session, mem);
        }
      }
      held->value = Ort::Value::CreateTensor(*core_->device_alloc, dims.data(), dims.size(), type);
      auto ts = held->value.GetTensorTypeAndShapeInfo();
      ZeroCuda(held->value.GetTensorMutableRawData(), ts.GetElementCount() * ElementSize(type), core_->device_id);
    } else {
      Ort::AllocatorWithDefaultOptions alloc;
      held->value = Ort::Value::CreateTensor(alloc, dims.data(), dims.size(), type);
      auto ts = held->value.GetTensorTypeAndShapeInfo();
      const size_t bytes = ts.GetElementCount() * ElementSize(type);
      if (bytes) std::memset(held->value.GetTensorMutableRawData(), 0, bytes);
    }
    return DeviceValue::Wrap(env, std::move(held));
  });
}

void Session::Enqueue(Napi::AsyncWorker* w) {
  if (busy_) {
    pending_.push_back(w);
  } else {
    busy_ = true;
    w->Queue();
  }
}

void Session::RunFinished() {
  if (pending_.empty()) {
    busy_ = false;
    return;
  }
  Napi::AsyncWorker* next = pending_.front();
  pending_.pop_front();
  next->Queue();
}

Napi::Value Session::Release(const Napi::CallbackInfo& info) {
  // Runs already queued, and live device values, keep the ORT session until they are done with it.
  core_.reset();
  return info.Env().Undefined();
}

Napi::Value Session::EndProfiling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!core_) throw MakeError(env, "RELEASED", "this session was released");
  try {
    Ort::AllocatorWithDefaultOptions alloc;
    auto name = core_->session->EndProfilingAllocated(alloc);
    return Napi::String::New(env, name.get() ? name.get() : "");
  } catch (const Ort::Exception& e) {
    throw MakeError(env, "ORT", e.what(), static_cast<int>(e.GetOrtErrorCode()));
  }
}

Napi::Value Session::GetInputNames(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), input_names_.size());
  for (size_t i = 0; i < input_names_.size(); ++i) a.Set(static_cast<uint32_t>(i), input_names_[i]);
  return a;
}

Napi::Value Session::GetOutputNames(const Napi::CallbackInfo& info) {
  Napi::Array a = Napi::Array::New(info.Env(), output_names_.size());
  for (size_t i = 0; i < output_names_.size(); ++i) a.Set(static_cast<uint32_t>(i), output_names_[i]);
  return a;
}

Napi::Value Session::GetInputMetadata(const Napi::CallbackInfo& info) { return input_meta_.Value(); }
Napi::Value Session::GetOutputMetadata(const Napi::CallbackInfo& info) { return output_meta_.Value(); }
Napi::Value Session::GetDevice(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_); }
Napi::Value Session::GetDeviceId(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_id_); }
Napi::Value Session::GetBusy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

Napi::Value Session::GetLastRunTiming(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!has_timing_) return env.Undefined();
  const RunTiming& t = last_timing_;
  return NumbersToJs(env, {{"wait", t.wait}, {"handOver", t.hand_over}, {"bind", t.bind}, {"run", t.run}, {"sync", t.sync},
                           {"collect", t.collect}, {"handBack", t.hand_back}, {"settle", t.settle}});
}
Napi::Value Session::GetReleased(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !core_); }

}  // namespace hubmoe
