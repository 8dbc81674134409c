// Greedy decode steps of a static-cache graph in one call (session.greedy, see runtime/native/index.ts).
//
// runtime/static.ts's decode step from JavaScript writes the step's token ids, attention-mask slot and
// position, runs the graph and reads each row's next token back: every step crosses to a libuv worker, to the
// session's thread (CUDA-graph sessions), and back twice, and JavaScript runs between steps. Here the same loop
// runs on the session's thread: two IoBindings (one per direction of the cache buffers) are made once, and a
// step is three small copies in, ONNX Runtime's Run (a replayed CUDA graph) and one small copy out.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "hubmoe.h"

namespace hubmoe {

namespace {

struct Named {
  std::string name;
  std::shared_ptr<HeldValue> value;
};

// One direction of the static cache: what a step reading that set of buffers feeds and binds.
struct Direction {
  std::vector<Named> feeds, bound;
  std::string graph_id = "-1";
};

struct GreedyJob {
  std::shared_ptr<SessionCore> core;
  Direction dir[2];
  int first = 0;
  int64_t steps = 0, slot = 0, B = 0, S = 0, pad = 0;
  std::shared_ptr<HeldValue> ids, mask, pos, next;
  std::vector<int64_t> tokens;  // the first step's token ids, [B]
  std::vector<uint8_t> done;    // rows already finished: fed `pad`
  std::set<int64_t> stop;       // token ids that finish a row
  std::vector<int64_t> out;     // [steps run, B]
  // Where the wall time went (µs; the step parts summed over the steps). See Session::GetLastGreedyTiming.
  using Clock = std::chrono::steady_clock;
  Clock::time_point called, started, job, looped, returned;
  GreedyTiming timing;
};

double Micros(GreedyJob::Clock::time_point a, GreedyJob::Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

bool OnCuda(const HeldValue& h) {
  return h.value.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_GPU;
}

char* Bytes(HeldValue& h) { return static_cast<char*>(h.value.GetTensorMutableRawData()); }

// `rows` rows of `width` bytes from host `src` (rows `spitch` apart) into `h` at byte `offset` (rows `dpitch` apart).
void Put(HeldValue& h, size_t offset, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, int dev) {
  char* dst = Bytes(h) + offset;
  if (OnCuda(h)) {
    CopyHostToCuda2D(dst, dpitch, src, spitch, width, rows, dev);
    return;
  }
  for (size_t r = 0; r < rows; ++r) std::memcpy(dst + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
}

void Get(void* dst, HeldValue& h, size_t bytes, int dev) {
  if (OnCuda(h)) CopyCudaToHost(dst, Bytes(h), bytes, dev);
  else std::memcpy(dst, Bytes(h), bytes);
}

void Loop(GreedyJob& j) {
  using Clock = GreedyJob::Clock;
  j.job = Clock::now();
  Ort::Session& s = *j.core->session;
  const int dev = j.core->device_id;
  std::vector<Ort::IoBinding> bindings;
  std::vector<Ort::RunOptions> options;
  bindings.reserve(2);
  options.reserve(2);
  for (const Direction& d : j.dir) {
    bindings.emplace_back(s);
    for (const Named& f : d.feeds) bindings.back().BindInput(f.name.c_str(), f.value->value);
    for (const Named& b : d.bound) bindings.back().BindOutput(b.name.c_str(), b.value->value);
    options.emplace_back();
    options.back().AddConfigEntry("gpu_graph_id", d.graph_id.c_str());
  }
  const size_t row_bytes = static_cast<size_t>(j.B) * sizeof(int64_t);
  std::vector<int64_t> feed = j.tokens, got(static_cast<size_t>(j.B));
  const std::vector<int64_t> ones(static_cast<size_t>(j.B), 1);
  j.out.reserve(static_cast<size_t>(j.steps * j.B));
  for (int64_t k = 0; k < j.steps; ++k) {
    const int d = static_cast<int>((j.first + k) & 1);
    const int64_t at = j.slot + k;
    const Clock::time_point t0 = Clock::now();
    Put(*j.ids, 0, row_bytes, feed.data(), row_bytes, row_bytes, 1, dev);
    Put(*j.mask, static_cast<size_t>(at) * sizeof(int64_t), static_cast<size_t>(j.S) * sizeof(int64_t), ones.data(),
        sizeof(int64_t), sizeof(int64_t), static_cast<size_t>(j.B), dev);
    Put(*j.pos, 0, sizeof(int64_t), &at, sizeof(int64_t), sizeof(int64_t), 1, dev);
    const Clock::time_point t1 = Clock::now();
    s.Run(options[d], bindings[d]);
    const Clock::time_point t2 = Clock::now();
    bindings[d].SynchronizeOutputs();
    const Clock::time_point t3 = Clock::now();
    Get(got.data(), *j.next, row_bytes, dev);
    j.out.insert(j.out.end(), got.begin(), got.end());
    const Clock::time_point t4 = Clock::now();
    j.timing.write += Micros(t0, t1);
    j.timing.run += Micros(t1, t2);
    j.timing.sync += Micros(t2, t3);
    j.timing.read += Micros(t3, t4);
    j.timing.steps += 1;
    // As runtime/model.ts does: a row that was finished is fed the pad id; one that finishes now is fed its token.
    bool all = true;
    for (size_t r = 0; r < got.size(); ++r) {
      feed[r] = j.done[r] ? j.pad : got[r];
      if (!j.done[r] && j.stop.count(got[r])) j.done[r] = 1;
      all = all && j.done[r];
    }
    if (all) break;
  }
  j.looped = Clock::now();
}

class GreedyWorker : public SessionWorker {
 public:
  GreedyWorker(Napi::Env env, Napi::Promise::Deferred deferred, Napi::Object self, std::unique_ptr<GreedyJob> job)
      : SessionWorker(env, "hubmoe:greedy"), deferred_(deferred), self_(Napi::Persistent(self)), job_(std::move(job)) {}

  void Execute() override {
    GreedyJob& j = *job_;
    j.started = GreedyJob::Clock::now();
    if (InSession(*j.core, [&j] { Loop(j); })) j.returned = GreedyJob::Clock::now();
  }

  void OnOK() override {
    Napi::Env env = Env();
    GreedyJob& j = *job_;
    GreedyTiming t = j.timing;
    t.wait = Micros(j.called, j.started);         // greedy() to a libuv worker starting it
    t.hand_over = Micros(j.started, j.job);       // the worker to the session's thread (CUDA-graph sessions)
    t.hand_back = Micros(j.looped, j.returned);   // the session's thread back to the worker
    t.settle = Micros(j.returned, GreedyJob::Clock::now());  // the worker to JavaScript's thread
    Session::Unwrap(self_.Value())->SetLastGreedyTiming(t);
    std::vector<int64_t> out = std::move(j.out);
    Finish();
    Napi::Value arr = env.Global().Get("BigInt64Array").As<Napi::Function>().New({Napi::Number::New(env, static_cast<double>(out.size()))});
    Napi::TypedArray ta = arr.As<Napi::TypedArray>();
    if (!out.empty()) std::memcpy(static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), out.data(), out.size() * sizeof(int64_t));
    deferred_.Resolve(arr);
  }

  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Finish();
    deferred_.Reject(MakeError(env, "ORT", e.Message(), ort_code_).Value());
  }

 private:
  void Finish() {
    Session::Unwrap(self_.Value())->RunFinished();
    job_.reset();
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  std::unique_ptr<GreedyJob> job_;
};

bool Has(const std::vector<ValueInfo>& xs, const std::string& n) {
  return std::any_of(xs.begin(), xs.end(), [&](const ValueInfo& v) { return v.name == n; });
}

int64_t Integer(Napi::Object o, const char* key, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(key);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : static_cast<double>(lo) - 1;
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != static_cast<double>(static_cast<int64_t>(d))) {
    throw ArgumentError(std::string("greedy: ") + key + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  return static_cast<int64_t>(d);
}

std::shared_ptr<HeldValue> DeviceArg(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!DeviceValue::Is(env, v)) throw ArgumentError("greedy: " + what + " must be a device value (from allocate())");
  std::shared_ptr<HeldValue> h = DeviceValue::Unwrap(v.As<Napi::Object>())->held();
  if (!h) throw MakeError(env, "DISPOSED", "greedy: " + what + ": the device value was disposed");
  return h;
}

// An int64 device value of `count` elements (and of dims [B, S] for the mask).
std::shared_ptr<HeldValue> Int64Value(Napi::Env env, Napi::Object o, const char* key, int64_t count) {
  std::shared_ptr<HeldValue> h = DeviceArg(env, o.Get(key), key);
  auto ts = h->value.GetTensorTypeAndShapeInfo();
  if (ts.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || static_cast<int64_t>(ts.GetElementCount()) != count) {
    throw ArgumentError(std::string("greedy: ") + key + " must be an int64 value of " + std::to_string(count) + " elements");
  }
  return h;
}

// A copy of a typed array of `type` (and of `count` elements, unless count < 0); `error` names what was expected.
template <typename E>
std::vector<E> TypedCopy(Napi::Value v, napi_typedarray_type type, int64_t count, const std::string& error) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw ArgumentError(error);
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (count >= 0 && static_cast<int64_t>(a.ElementLength()) != count) throw ArgumentError(error);
  const E* p = reinterpret_cast<const E*>(static_cast<const char*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  return std::vector<E>(p, p + a.ElementLength());
}

std::vector<Named> NamedValues(Napi::Env env, Napi::Value v, const std::vector<ValueInfo>& known, const std::string& what) {
  if (!v.IsObject() || v.IsArray()) throw ArgumentError("greedy: " + what + " must be an object of name → device value");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Array keys = o.GetPropertyNames();
  std::vector<Named> xs;
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    Named n;
    n.name = keys.Get(i).ToString().Utf8Value();
    if (!Has(known, n.name)) throw ArgumentError("greedy: " + what + ": the model has no " + (what.find("feeds") == 0 ? "input" : "output") + " '" + n.name + "'");
    n.value = DeviceArg(env, o.Get(n.name), what + "." + n.name);
    xs.push_back(std::move(n));
  }
  return xs;
}

}  // namespace

// greedy({ steps, feeds: [F0, F1], bind: [O0, O1], graphIds?: [g0, g1], first, ids, mask, pos, next, tokens, slot,
//          done, stop, pad }) → Promise<BigInt64Array> of [steps run, B] token ids.
Napi::Value Session::Greedy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return PromiseOf(env, [&](Napi::Promise::Deferred deferred) {
    if (!core_) throw MakeError(env, "RELEASED", "this session was released");
    if (info.Length() < 1 || !info[0].IsObject()) throw ArgumentError("greedy(args): args must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto job = std::make_unique<GreedyJob>();
    job->called = GreedyJob::Clock::now();
    job->core = core_;
    job->tokens = TypedCopy<int64_t>(o.Get("tokens"), napi_bigint64_array, -1,
                                     "greedy: tokens must be a BigInt64Array (the first step's token id of each row)");
    job->B = static_cast<int64_t>(job->tokens.size());
    if (job->B < 1) throw ArgumentError("greedy: tokens must hold at least one row");
    job->done = TypedCopy<uint8_t>(o.Get("done"), napi_uint8_array, job->B,
                                   "greedy: done must be a Uint8Array of one flag per row (" + std::to_string(job->B) + ")");
    const std::vector<int64_t> stop = TypedCopy<int64_t>(o.Get("stop"), napi_bigint64_array, -1, "greedy: stop must be a BigInt64Array of token ids");
    job->stop.insert(stop.begin(), stop.end());
    job->pad = Integer(o, "pad", 0, (int64_t(1) << 53) - 1);
    job->steps = Integer(o, "steps", 1, int64_t(1) << 30);
    job->slot = Integer(o, "slot", 0, int64_t(1) << 40);
    job->first = static_cast<int>(Integer(o, "first", 0, 1));
    job->ids = Int64Value(env, o, "ids", job->B);
    job->next = Int64Value(env, o, "next", job->B);
    job->pos = Int64Value(env, o, "pos", 1);
    job->mask = DeviceArg(env, o.Get("mask"), "mask");
    {
      auto ts = job->mask->value.GetTensorTypeAndShapeInfo();
      const std::vector<int64_t> dims = ts.GetShape();
      if (ts.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || dims.size() != 2 || dims[0] != job->B) {
        throw ArgumentError("greedy: mask must be an int64 value of dims [" + std::to_string(job->B) + ", window]");
      }
      job->S = dims[1];
    }
    if (job->slot + job->steps > job->S) {
      throw ArgumentError("greedy: " + std::to_string(job->steps) + " steps from slot " + std::to_string(job->slot) + " do not fit the window of " +
                          std::to_string(job->S) + " slots");
    }
    Napi::Value fv = o.Get("feeds"), bv = o.Get("bind"), gv = o.Get("graphIds");
    if (!fv.IsArray() || fv.As<Napi::Array>().Length() != 2) throw ArgumentError("greedy: feeds must be an array of two objects (one per direction)");
    if (!bv.IsArray() || bv.As<Napi::Array>().Length() != 2) throw ArgumentError("greedy: bind must be an array of two objects (one per direction)");
    const bool graphs = !gv.IsUndefined() && !gv.IsNull();
    if (graphs) {
      if (!core_->cuda_graph) throw ArgumentError("greedy: graphIds given, but this session was not created with cudaOptions.enable_cuda_graph");
      if (!gv.IsArray() || gv.As<Napi::Array>().Length() != 2) throw ArgumentError("greedy: graphIds must be an array of two positive integers");
    }
    for (uint32_t d = 0; d < 2; ++d) {
      Direction& dir = job->dir[d];
      dir.feeds = NamedValues(env, fv.As<Napi::Array>().Get(d), core_->inputs, "feeds[" + std::to_string(d) + "]");
      dir.bound = NamedValues(env, bv.As<Napi::Array>().Get(d), core_->outputs, "bind[" + std::to_string(d) + "]");
      if (graphs) {
        Napi::Value g = gv.As<Napi::Array>().Get(d);
        const double x = g.IsNumber() ? g.As<Napi::Number>().DoubleValue() : 0;
        if (!(x >= 1 && x <= 2147483647.0) || x != static_cast<double>(static_cast<int64_t>(x))) {
          throw ArgumentError("greedy: graphIds must be an array of two positive integers");
        }
        dir.graph_id = std::to_string(static_cast<int64_t>(x));
      }
      const bool binds_next = std::any_of(dir.bound.begin(), dir.bound.end(), [&](const Named& b) { return b.value == job->next; });
      if (!binds_next) throw ArgumentError("greedy: bind[" + std::to_string(d) + "] must bind an output to `next` (the graph's next_token)");
    }
    Enqueue(new GreedyWorker(env, deferred, info.This().As<Napi::Object>(), std::move(job)));
  });
}

Napi::Value Session::GetLastGreedyTiming(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!has_greedy_) return env.Undefined();
  const GreedyTiming& t = last_greedy_;
  return NumbersToJs(env, {{"steps", t.steps}, {"wait", t.wait}, {"handOver", t.hand_over}, {"write", t.write}, {"run", t.run},
                           {"sync", t.sync}, {"read", t.read}, {"handBack", t.hand_back}, {"settle", t.settle}});
}

}  // namespace hubmoe
