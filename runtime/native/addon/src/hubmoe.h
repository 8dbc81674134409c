// hubmoe native addon: shared declarations.
//
// ONNX Runtime is loaded at run time (ort.cc), so every Ort:: call needs init() to have run first;
// EnsureOrt() guards the entry points. ORT_API_MANUAL_INIT comes from binding.gyp so that every
// translation unit sees the same Ort::Global<void>::api_ definition.
#pragma once

#include <napi.h>
#include <onnxruntime_cxx_api.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <memory>
#include <string>
#include <vector>

namespace hubmoe {

// ---- ort.cc: loading ONNX Runtime, the process env, CUDA copies ----

// Loads libonnxruntime from `path` (once per process) and initialises the C++ API at ORT_API_VERSION.
// Throws std::runtime_error with a readable message.
void LoadOrt(const std::string& path);
bool OrtLoaded();
const std::string& OrtLibraryPath();
// ORT's own version string (Ort::GetVersionString() would need OrtGetApiBase linked in).
std::string OrtVersionString();
// Throws a JS Error when init() has not run.
void EnsureOrt(Napi::Env env);
// The process-wide OrtEnv (ORT hands back the one onnxruntime-node created, if any). Never released.
Ort::Env& ProcessEnv();
// Copies `bytes` from CUDA memory on `device_id` to host memory, through the CUDA runtime that the
// CUDA execution provider loaded. Throws std::runtime_error when no CUDA runtime can be found.
void CopyCudaToHost(void* dst, const void* src, size_t bytes, int device_id);
// `rows` rows of `width` bytes from host memory (rows `spitch` apart) into CUDA memory (rows `dpitch`
// apart), synchronously. Throws std::runtime_error.
void CopyHostToCuda2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, int device_id);
// The reverse: `rows` rows of `width` bytes from CUDA memory (rows `spitch` apart) to host memory.
void CopyCudaToHost2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, int device_id);
// Sets `bytes` of CUDA memory to zero, synchronously.
void ZeroCuda(void* dst, size_t bytes, int device_id);

// ---- tensor.cc: element types and host tensors ----

// onnxruntime-common's name for an element type ('float32', 'int64', …); "unknown" for others.
const char* ElementTypeName(ONNXTensorElementDataType type);
// The reverse; ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED for names it does not know.
ONNXTensorElementDataType ElementTypeFromName(const std::string& name);
// Bytes per element, 0 for types without a fixed size (string).
size_t ElementSize(ONNXTensorElementDataType type);

// An error raised while reading JS arguments; the addon rejects with code 'BAD_ARGUMENT'.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A host tensor read from JS ({ type, dims, data }) as an Ort::Value over the JS memory (no copy).
// `keep` must be held (and released on the main thread) for as long as the value is in use.
struct HostFeed {
  Ort::Value value{nullptr};
  std::unique_ptr<Napi::Reference<Napi::Value>> keep;
};
HostFeed ReadHostTensor(Napi::Env env, const std::string& name, Napi::Value v);
// A JS host tensor { type, dims, data } holding a copy of a CPU-resident tensor's bytes.
Napi::Object MakeHostTensor(Napi::Env env, const char* type_name, ONNXTensorElementDataType type,
                            const std::vector<int64_t>& dims, const void* data, size_t bytes);
// What keeps an adopted host tensor's bytes alive: an ORT output value, or a host copy of a device value.
struct HostBacking {
  virtual ~HostBacking() = default;
};
struct OrtBacking : HostBacking {
  explicit OrtBacking(Ort::Value v) : value(std::move(v)) {}
  Ort::Value value;
};
struct VectorBacking : HostBacking {
  explicit VectorBacking(std::vector<uint8_t> b) : bytes(std::move(b)) {}
  std::vector<uint8_t> bytes;
};
// Outputs smaller than this are copied (an external buffer and its finalizer cost more than the copy).
constexpr size_t kAdoptMinBytes = 64 * 1024;
// The same without a copy: the TypedArray is over `data`, which `owner` keeps alive until the array is collected
// (V8 is told of the external memory). Small tensors, or a runtime that refuses external buffers, get a copy.
Napi::Object AdoptHostTensor(Napi::Env env, const char* type_name, ONNXTensorElementDataType type,
                             const std::vector<int64_t>& dims, std::unique_ptr<HostBacking> owner, void* data,
                             size_t bytes);
Napi::Array DimsToJs(Napi::Env env, const std::vector<int64_t>& dims);

// A JS object of numbers, { key: value, … } (the sessions' timing getters).
Napi::Object NumbersToJs(Napi::Env env, std::initializer_list<std::pair<const char*, double>> entries);

// Errors handed to JS carry a `code`: 'ORT' (with `ortCode`), 'BAD_ARGUMENT', 'DISPOSED', 'RELEASED',
// 'NOT_INITIALIZED', 'LOAD' or 'CUDA'.
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int ort_code = -1);

// Runs f() and turns what it throws into a JS error: ArgumentError → 'BAD_ARGUMENT', Ort::Exception → 'ORT' (with
// its code), a JS error as it is, any other std::exception → `other` (e.g. 'CUDA').
template <typename F>
auto Guard(Napi::Env env, const char* other, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ArgumentError& e) {
    throw MakeError(env, "BAD_ARGUMENT", e.what());
  } catch (const Ort::Exception& e) {
    throw MakeError(env, "ORT", e.what(), static_cast<int>(e.GetOrtErrorCode()));
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw MakeError(env, other, e.what());
  }
}

// A promise settled by what f(deferred) does, or rejected with what it throws: ArgumentError → 'BAD_ARGUMENT',
// Ort::Exception → 'ORT' (with its code), a JS error as it is. For entry points that start work on a worker thread.
template <typename F>
Napi::Value PromiseOf(Napi::Env env, F&& f) {
  auto deferred = Napi::Promise::Deferred::New(env);
  try {
    f(deferred);
  } catch (const ArgumentError& e) {
    deferred.Reject(MakeError(env, "BAD_ARGUMENT", e.what()).Value());
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  } catch (const Ort::Exception& e) {
    deferred.Reject(MakeError(env, "ORT", e.what(), static_cast<int>(e.GetOrtErrorCode())).Value());
  }
  return deferred.Promise();
}

// ---- session.cc / device_value.cc ----

// What a session's device values share with it: a device value keeps the session (and so the
// allocator its memory came from) alive until the value is freed.
struct ValueInfo {
  std::string name;
  bool is_tensor = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;          // -1 for a dynamic dim
  std::vector<std::string> symbolic;   // the dim's name, or "" when it has none
};

// One thread that runs every ORT call of a session whose CUDA provider captures CUDA graphs: ORT keeps
// captured graphs per calling thread, so runs must not wander over libuv's pool.
class Executor {
 public:
  Executor();
  ~Executor();
  // Runs `job` on the executor's thread and waits for it; exceptions propagate to the caller.
  void Call(const std::function<void()>& job);

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

struct SessionCore;

// A worker that runs ONNX Runtime work of a session: InSession() runs it on the session's own thread when it has one
// (CUDA-graph sessions), else on the worker thread, and turns what it throws into the worker's error (with ORT's
// error code, for the rejection's `ortCode`).
class SessionWorker : public Napi::AsyncWorker {
 protected:
  SessionWorker(Napi::Env env, const char* name) : Napi::AsyncWorker(env, name) {}
  template <typename F>
  bool InSession(SessionCore& core, F&& f);
  int ort_code_ = -1;
};

struct SessionCore {
  std::unique_ptr<Ort::Session> session;
  std::vector<ValueInfo> inputs, outputs;
  std::string device;  // "cpu" | "cuda"
  int device_id = 0;
  bool cuda_graph = false;  // enable_cuda_graph was set
  // The allocator values made by allocate() come from (kept while any of them lives).
  std::mutex alloc_mu;
  std::unique_ptr<Ort::Allocator> device_alloc;
  // Declared last, destroyed first: the thread is joined before the session goes.
  std::unique_ptr<Executor> executor;
};

template <typename F>
bool SessionWorker::InSession(SessionCore& core, F&& f) {
  try {
    if (core.executor) core.executor->Call(f);
    else f();
    return true;
  } catch (const Ort::Exception& e) {
    ort_code_ = static_cast<int>(e.GetOrtErrorCode());
    SetError(e.what());
  } catch (const std::exception& e) {
    SetError(e.what());
  }
  return false;
}

// An OrtValue handed to JS as a DeviceValue. Held through shared_ptr so that a run in flight keeps
// it alive even when JS disposes of the handle meanwhile.
struct HeldValue {
  Ort::Value value{nullptr};
  std::shared_ptr<SessionCore> owner;
};

class DeviceValue : public Napi::ObjectWrap<DeviceValue> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<HeldValue> held);
  static bool Is(Napi::Env env, Napi::Value v);
  static DeviceValue* Unwrap(Napi::Object o) { return Napi::ObjectWrap<DeviceValue>::Unwrap(o); }

  explicit DeviceValue(const Napi::CallbackInfo& info);
  // The held value, or null when disposed.
  std::shared_ptr<HeldValue> held() const { return held_; }

 private:
  Napi::Value GetType(const Napi::CallbackInfo& info);
  Napi::Value GetDims(const Napi::CallbackInfo& info);
  Napi::Value GetLocation(const Napi::CallbackInfo& info);
  Napi::Value GetDeviceId(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value Download(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Zero(const Napi::CallbackInfo& info);

  std::shared_ptr<HeldValue> held_;
  std::string type_;
  std::vector<int64_t> dims_;
  std::string location_;
  int device_id_ = 0;
};

// Where a run's wall time went, in microseconds (the session's `lastRunTiming`; see runtime/native/index.ts).
struct RunTiming {
  double wait = 0, hand_over = 0, bind = 0, run = 0, sync = 0, collect = 0, hand_back = 0, settle = 0;
};

// Where a greedy call's wall time went, in microseconds summed over its steps (the session's `lastGreedyTiming`).
struct GreedyTiming {
  double steps = 0, wait = 0, hand_over = 0, write = 0, run = 0, sync = 0, read = 0, hand_back = 0, settle = 0;
};

class Session : public Napi::ObjectWrap<Session> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<SessionCore> core);

  explicit Session(const Napi::CallbackInfo& info);
  // Called on the main thread when a run settles: starts the next queued run, if any.
  void RunFinished();
  // Called on the main thread when a run succeeds.
  void SetLastTiming(const RunTiming& t) { last_timing_ = t, has_timing_ = true; }
  // Called on the main thread when a greedy call succeeds.
  void SetLastGreedyTiming(const GreedyTiming& t) { last_greedy_ = t, has_greedy_ = true; }

 private:
  Napi::Value Run(const Napi::CallbackInfo& info);
  // greedy.cc: greedy decode steps of a static-cache graph in one call (see runtime/native/index.ts).
  Napi::Value Greedy(const Napi::CallbackInfo& info);
  // Starts `w` now, or after the runs queued before it (runs and greedy loops of a session are serialised).
  void Enqueue(Napi::AsyncWorker* w);
  Napi::Value Allocate(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value EndProfiling(const Napi::CallbackInfo& info);
  Napi::Value GetInputNames(const Napi::CallbackInfo& info);
  Napi::Value GetOutputNames(const Napi::CallbackInfo& info);
  Napi::Value GetInputMetadata(const Napi::CallbackInfo& info);
  Napi::Value GetOutputMetadata(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetDeviceId(const Napi::CallbackInfo& info);
  Napi::Value GetBusy(const Napi::CallbackInfo& info);
  Napi::Value GetReleased(const Napi::CallbackInfo& info);
  Napi::Value GetLastRunTiming(const Napi::CallbackInfo& info);
  Napi::Value GetLastGreedyTiming(const Napi::CallbackInfo& info);

  std::shared_ptr<SessionCore> core_;
  std::string device_;
  int device_id_ = 0;
  std::vector<std::string> input_names_, output_names_;
  Napi::ObjectReference input_meta_, output_meta_;
  // Runs are serialised: one in flight, the others waiting here with their feeds already captured
  // (so a device value disposed after run() was called is still fed).
  bool busy_ = false;
  std::deque<Napi::AsyncWorker*> pending_;
  // Kept as numbers; the JS object is built only when asked for (not on every decode step).
  RunTiming last_timing_;
  bool has_timing_ = false;
  GreedyTiming last_greedy_;
  bool has_greedy_ = false;
};

// Starts session creation on a worker thread; resolves to a Session object.
Napi::Value CreateSession(const Napi::CallbackInfo& info);

// Per-env (per Node worker) constructors.
struct AddonData {
  Napi::FunctionReference session_ctor;
  Napi::FunctionReference device_value_ctor;
};

}  // namespace hubmoe
