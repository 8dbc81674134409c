// DeviceValue: a JS handle on an OrtValue that a run left in device memory (or in CPU memory, on a
// CPU session), to be fed back to a later run without a copy.
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
  return MakeHostTensor(env, type_.c_str(), type, dims_, host.data(), bytes);
}

Napi::Value DeviceValue::Dispose(const Napi::CallbackInfo& info) {
  // A run in flight holds its own reference: the memory goes when that run is done.
  held_.reset();
  return info.Env().Undefined();
}

}  // namespace hubmoe
