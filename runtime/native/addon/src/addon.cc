// hubmoe_native: entry points. See runtime/native/index.ts for the typed wrapper and the contract.
#include "hubmoe.h"

namespace hubmoe {

namespace {

Napi::Object VersionInfo(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ort", OrtVersionString());
  o.Set("api", Napi::Number::New(env, ORT_API_VERSION));
  o.Set("library", OrtLibraryPath());
  return o;
}

// init(libonnxruntimePath) → { ort, api, library }. Idempotent for the same path.
Napi::Value InitOrt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw MakeError(env, "BAD_ARGUMENT", "init(path): path to libonnxruntime.so.1 expected");
  try {
    LoadOrt(info[0].As<Napi::String>().Utf8Value());
  } catch (const std::exception& e) {
    throw MakeError(env, "LOAD", e.what());
  }
  return VersionInfo(env);
}

Napi::Value Version(const Napi::CallbackInfo& info) {
  EnsureOrt(info.Env());
  return VersionInfo(info.Env());
}

Napi::Value Providers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnsureOrt(env);
  try {
    std::vector<std::string> ps = Ort::GetAvailableProviders();
    Napi::Array a = Napi::Array::New(env, ps.size());
    for (size_t i = 0; i < ps.size(); ++i) a.Set(static_cast<uint32_t>(i), ps[i]);
    return a;
  } catch (const Ort::Exception& e) {
    throw MakeError(env, "ORT", e.what(), static_cast<int>(e.GetOrtErrorCode()));
  }
}

Napi::Object Setup(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->session_ctor = Napi::Persistent(Session::Define(env));
  data->device_value_ctor = Napi::Persistent(DeviceValue::Define(env));
  env.SetInstanceData<AddonData>(data);
  exports.Set("init", Napi::Function::New<InitOrt>(env, "init"));
  exports.Set("version", Napi::Function::New<Version>(env, "version"));
  exports.Set("providers", Napi::Function::New<Providers>(env, "providers"));
  exports.Set("createSession", Napi::Function::New<CreateSession>(env, "createSession"));
  exports.Set("Session", data->session_ctor.Value());
  exports.Set("DeviceValue", data->device_value_ctor.Value());
  return exports;
}

}  // namespace
}  // namespace hubmoe

static Napi::Object RegisterModule(Napi::Env env, Napi::Object exports) { return hubmoe::Setup(env, exports); }

NODE_API_MODULE(hubmoe_native, RegisterModule)
