// DeviceValue: a JS handle on an OrtValue that a run left in device memory (or in CPU memory, on a
// CPU session), to be fed back to a later run without a copy.
#include <cstring>

#include "hubmoe.h"

namespace hubmoe {

Napi::Function DeviceValue::Define(Napi::Env env) {
  return DefineClass(env, "DeviceValue",
                     {
                         InstanceAccessor<&DeviceValue::GetType>("type"),
                         InstanceAccessor<&DeviceValue::GetDims>("dims"),
                         InstanceAccessor<&DeviceValue::GetLocation>("location"),
                         InstanceAccessor<&DeviceValue::GetDeviceId>("deviceId"),
                         InstanceAccessor<&DeviceValue::GetDisposed>("disposed"),
                         InstanceMethod<&DeviceValue::Download>("download"),
                         InstanceMethod<&DeviceValue::Dispose>("dispose"),
                         InstanceMethod<&DeviceValue::Write>("write"),
                         InstanceMethod<&DeviceValue::Read>("read"),
                         InstanceMethod<&DeviceValue::Zero>("zero"),
                     });
}

Napi::Object DeviceValue::Wrap(Napi::Env env, std::shared_ptr<HeldValue> held) {
  auto* data = env.GetInstanceData<AddonData>();
  auto* ptr = new std::shared_ptr<HeldValue>(std::move(held));
  // The External only carries the pointer into the constructor, which takes ownership.
  return data->device_value_ctor.New({Napi::External<std::shared_ptr<HeldValue>>::New(env, ptr)});
}

bool DeviceValue::Is(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return false;
  auto* data = env.GetInstanceData<AddonData>();
  return v.As<Napi::Object>().InstanceOf(data->device_value_ctor.Value());
}

DeviceValue::DeviceValue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceValue>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "DeviceValue cannot be constructed from JavaScript; device values come from a session's run()");
  }
  auto* ptr = info[0].As<Napi::External<std::shared_ptr<HeldValue>>>().Data();
  held_ = std::move(*ptr);
  delete ptr;
  auto info_ts = held_->value.GetTensorTypeAndShapeInfo();
  type_ = ElementTypeName(info_ts.GetElementType());
  dims_ = info_ts.GetShape();
  auto mem = held_->value.GetTensorMemoryInfo();
  location_ = mem.GetDeviceType() == OrtMemoryInfoDeviceType_GPU ? "cuda" : "cpu";
  device_id_ = mem.GetDeviceId();
}

Napi::Value DeviceValue::GetType(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), type_); }
Napi::Value DeviceValue::GetDims(const Napi::CallbackInfo& info) { return DimsToJs(info.Env(), dims_); }
Napi::Value DeviceValue::GetLocation(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), location_); }
Napi::Value DeviceValue::GetDeviceId(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_id_); }
Napi::Value DeviceValue::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !held_); }

Napi::Value DeviceValue::Download(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!held_) throw MakeError(env, "DISPOSED", "this device value was disposed; it cannot be downloaded");
  const Ort::Value& v = held_->value;
  auto ts = v.GetTensorTypeAndShapeInfo();
  const ONNXTensorElementDataType type = ts.GetElementType();
  const size_t bytes = ts.GetElementCount() * ElementSize(type);
  if (ElementSize(type) == 0) throw MakeError(env, "BAD_ARGUMENT", "cannot download a tensor of element type " + type_);
  const void* src = v.GetTensorRawData();
  if (location_ == "cpu") return MakeHostTensor(env, type_.c_str(), type, dims_, src, bytes);
  std::vector<uint8_t> host(bytes);
  try {
    CopyCudaToHost(host.data(), src, bytes, device_id_);
  } catch (const std::exception& e) {
    throw MakeError(env, "CUDA", e.what());
  }
  void* data = host.data();
  return AdoptHostTensor(env, type_.c_str(), type, dims_, std::make_unique<VectorBacking>(std::move(host)), data, bytes);
}

namespace {
double Whole(Napi::Value v, const char* what, double dflt) {
  if (v.IsUndefined() || v.IsNull()) return dflt;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    throw ArgumentError(std::string(what) + " must be a non-negative integer");
  }
  return d;
}
}  // namespace

// write(data, offset = 0, width = data.length, pitch = width): copies data's elements into the value,
// in rows of `width` elements, row r at element offset + r·pitch. Synchronous; no run may be using
// the value meanwhile.
Napi::Value DeviceValue::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!held_) throw MakeError(env, "DISPOSED", "this device value was disposed; it cannot be written");
  Guard(env, "CUDA", [&]() -> void {
    Ort::Value& v = held_->value;
    auto ts = v.GetTensorTypeAndShapeInfo();
    const size_t es = ElementSize(ts.GetElementType());
    const size_t count = ts.GetElementCount();
    if (info.Length() < 1 || !info[0].IsTypedArray()) throw ArgumentError("write(data, …): data must be a TypedArray");
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    const size_t js_es = ta.ElementLength() ? ta.ByteLength() / ta.ElementLength() : es;
    if (es == 0 || js_es != es) {
      throw ArgumentError("write(data, …): a " + type_ + " value takes " + std::to_string(es) + "-byte elements (got " + std::to_string(js_es) + "-byte ones)");
    }
    const size_t n = ta.ElementLength();
    const size_t offset = static_cast<size_t>(Whole(info.Length() > 1 ? info[1] : env.Undefined(), "offset", 0));
    const size_t width = static_cast<size_t>(Whole(info.Length() > 2 ? info[2] : env.Undefined(), "width", static_cast<double>(n)));
    const size_t pitch = static_cast<size_t>(Whole(info.Length() > 3 ? info[3] : env.Undefined(), "pitch", static_cast<double>(width)));
    if (n == 0) return;
    if (width == 0 || n % width != 0) throw ArgumentError("write(data, offset, width, pitch): data's length must be a multiple of width");
    const size_t rows = n / width;
    if (pitch < width) throw ArgumentError("write(data, offset, width, pitch): pitch must be at least width");
    if (offset + (rows - 1) * pitch + width > count) {
      throw ArgumentError("write: " + std::to_string(rows) + " rows of " + std::to_string(width) + " at offset " + std::to_string(offset) +
                          " (pitch " + std::to_string(pitch) + ") overrun a value of " + std::to_string(count) + " elements");
    }
    const uint8_t* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    uint8_t* dst = static_cast<uint8_t*>(v.GetTensorMutableRawData()) + offset * es;
    if (location_ == "cpu") {
      for (size_t r = 0; r < rows; ++r) std::memcpy(dst + r * pitch * es, src + r * width * es, width * es);
    } else {
      CopyHostToCuda2D(dst, pitch * es, src, width * es, width * es, rows, device_id_);
    }
  });
  return env.Undefined();
}

// read(offset, width, pitch = width, rows = 1) → a host tensor [rows, width] of the elements at offset + r·pitch …
// + width − 1 for each row r: part of a value, without copying the rest (e.g. the last position's logits).
Napi::Value DeviceValue::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!held_) throw MakeError(env, "DISPOSED", "this device value was disposed; it cannot be read");
  return Guard(env, "CUDA", [&]() -> Napi::Value {
    const Ort::Value& v = held_->value;
    auto ts = v.GetTensorTypeAndShapeInfo();
    const ONNXTensorElementDataType type = ts.GetElementType();
    const size_t es = ElementSize(type);
    if (es == 0) throw ArgumentError("cannot read a tensor of element type " + type_);
    const size_t count = ts.GetElementCount();
    auto arg = [&](size_t i) { return info.Length() > i ? info[i] : env.Undefined(); };
    const size_t offset = static_cast<size_t>(Whole(arg(0), "offset", 0));
    const size_t width = static_cast<size_t>(Whole(arg(1), "width", static_cast<double>(count - std::min(count, offset))));
    const size_t pitch = static_cast<size_t>(Whole(arg(2), "pitch", static_cast<double>(width)));
    const size_t rows = static_cast<size_t>(Whole(arg(3), "rows", 1));
    if (pitch < width) throw ArgumentError("read(offset, width, pitch, rows): pitch must be at least width");
    if (rows && width && offset + (rows - 1) * pitch + width > count) {
      throw ArgumentError("read: " + std::to_string(rows) + " rows of " + std::to_string(width) + " at offset " + std::to_string(offset) +
                          " (pitch " + std::to_string(pitch) + ") overrun a value of " + std::to_string(count) + " elements");
    }
    std::vector<uint8_t> host(rows * width * es);
    const uint8_t* src = static_cast<const uint8_t*>(v.GetTensorRawData()) + offset * es;
    if (location_ == "cpu") {
      for (size_t r = 0; r < rows; ++r) std::memcpy(host.data() + r * width * es, src + r * pitch * es, width * es);
    } else {
      CopyCudaToHost2D(host.data(), width * es, src, pitch * es, width * es, rows, device_id_);
    }
    void* data = host.data();
    const size_t bytes = host.size();
    return AdoptHostTensor(env, type_.c_str(), type, {static_cast<int64_t>(rows), static_cast<int64_t>(width)},
                           std::make_unique<VectorBacking>(std::move(host)), data, bytes);
  });
}

// zero(): sets every element to 0 (synchronous).
Napi::Value DeviceValue::Zero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!held_) throw MakeError(env, "DISPOSED", "this device value was disposed; it cannot be cleared");
  Guard(env, "CUDA", [&] {
    Ort::Value& v = held_->value;
    auto ts = v.GetTensorTypeAndShapeInfo();
    const size_t bytes = ts.GetElementCount() * ElementSize(ts.GetElementType());
    void* dst = v.GetTensorMutableRawData();
    if (location_ == "cpu") {
      if (bytes) std::memset(dst, 0, bytes);
    } else {
      ZeroCuda(dst, bytes, device_id_);
    }
  });
  return env.Undefined();
}

Napi::Value DeviceValue::Dispose(const Napi::CallbackInfo& info) {
  // A run in flight holds its own reference: the memory goes when that run is done.
  held_.reset();
  return info.Env().Undefined();
}

}  // namespace hubmoe
