// Element types (onnxruntime-common's names) and host tensors ({ type, dims, data }).
#include <cstdlib>
#include <cstring>

#include "hubmoe.h"

namespace hubmoe {

namespace {
struct TypeRow {
  ONNXTensorElementDataType type;
  const char* name;
  size_t size;
  napi_typedarray_type js;  // the TypedArray that carries it
};

// onnxruntime-common's names; bool is carried by a Uint8Array, float16/bfloat16 by a Uint16Array.
const TypeRow kTypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, "float32", 4, napi_float32_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, "float16", 2, napi_uint16_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, "bfloat16", 2, napi_uint16_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, "float64", 8, napi_float64_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, "int8", 1, napi_int8_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, "uint8", 1, napi_uint8_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, "int16", 2, napi_int16_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, "uint16", 2, napi_uint16_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, "int32", 4, napi_int32_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, "uint32", 4, napi_uint32_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, "int64", 8, napi_bigint64_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, "uint64", 8, napi_biguint64_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, "bool", 1, napi_uint8_array},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, "string", 0, napi_uint8_array},
};

const TypeRow* Row(ONNXTensorElementDataType t) {
  for (const auto& r : kTypes)
    if (r.type == t) return &r;
  return nullptr;
}

const char* JsArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// Stands in for the data pointer of an empty tensor (an empty TypedArray may have none).
alignas(16) char g_empty[16];
}  // namespace

const char* ElementTypeName(ONNXTensorElementDataType type) {
  const TypeRow* r = Row(type);
  return r ? r->name : "unknown";
}

ONNXTensorElementDataType ElementTypeFromName(const std::string& name) {
  for (const auto& r : kTypes)
    if (name == r.name) return r.type;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

size_t ElementSize(ONNXTensorElementDataType type) {
  const TypeRow* r = Row(type);
  return r ? r->size : 0;
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int ort_code) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (ort_code >= 0) e.Set("ortCode", Napi::Number::New(env, ort_code));
  return e;
}

Napi::Array DimsToJs(Napi::Env env, const std::vector<int64_t>& dims) {
  Napi::Array a = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(dims[i])));
  return a;
}

HostFeed ReadHostTensor(Napi::Env env, const std::string& name, Napi::Value v) {
  const std::string what = "input " + name;
  if (!v.IsObject()) throw ArgumentError(what + ": expected a tensor { type, dims, data } or a device value");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value tv = o.Get("type");
  if (!tv.IsString()) throw ArgumentError(what + ": the tensor has no string `type`");
  const std::string tname = tv.As<Napi::String>().Utf8Value();
  const ONNXTensorElementDataType type = ElementTypeFromName(tname);
  const TypeRow* row = Row(type);
  if (!row || row->size == 0) throw ArgumentError(what + ": element type '" + tname + "' is not supported");

  Napi::Value dv = o.Get("dims");
  if (!dv.IsArray()) throw ArgumentError(what + ": the tensor has no `dims` array");
  Napi::Array da = dv.As<Napi::Array>();
  std::vector<int64_t> dims(da.Length());
  size_t count = 1;
  for (uint32_t i = 0; i < da.Length(); ++i) {
    Napi::Value d = da.Get(i);
    double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0) || x != static_cast<double>(static_cast<int64_t>(x)) || x > 9007199254740991.0) {
      throw ArgumentError(what + ": dims must be non-negative integers");
    }
    dims[i] = static_cast<int64_t>(x);
    count *= static_cast<size_t>(dims[i]);
  }

  Napi::Value data = o.Get("data");
  if (!data.IsTypedArray()) throw ArgumentError(what + ": `data` must be a TypedArray (a " + std::string(JsArrayName(row->js)) + " for " + tname + ")");
  Napi::TypedArray ta = data.As<Napi::TypedArray>();
  napi_typedarray_type jt = ta.TypedArrayType();
  bool type_ok = jt == row->js || (row->js == napi_uint8_array && jt == napi_uint8_clamped_array);
  if (!type_ok) {
    throw ArgumentError(what + ": " + tname + " data must be a " + JsArrayName(row->js) + " (got a " + JsArrayName(jt) + ")");
  }
  if (ta.ElementLength() != count) {
    throw ArgumentError(what + ": dims hold " + std::to_string(count) + " elements but data has " + std::to_string(ta.ElementLength()));
  }
  const size_t bytes = count * row->size;
  void* ptr = bytes ? static_cast<void*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset()) : static_cast<void*>(g_empty);

  // Leaked on purpose: must not be released after ONNX Runtime at process exit.
  static const Ort::MemoryInfo& cpu = *new Ort::MemoryInfo(Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault));
  HostFeed feed;
  feed.value = Ort::Value::CreateTensor(cpu, ptr, bytes, dims.data(), dims.size(), type);
  // The run reads this memory from a worker thread: keep the array alive until it is done.
  feed.keep = std::make_unique<Napi::Reference<Napi::Value>>(Napi::Persistent(data));
  return feed;
}

namespace {
// { type, dims, data } with data a TypedArray of the row's kind over `buf`.
Napi::Object HostTensorOver(Napi::Env env, const char* type_name, const TypeRow* row, const std::vector<int64_t>& dims,
                            Napi::ArrayBuffer buf, size_t bytes) {
  const size_t n = bytes / row->size;
  Napi::Value arr;
  switch (row->js) {
    case napi_float32_array: arr = Napi::Float32Array::New(env, n, buf, 0); break;
    case napi_float64_array: arr = Napi::Float64Array::New(env, n, buf, 0); break;
    case napi_int8_array: arr = Napi::Int8Array::New(env, n, buf, 0); break;
    case napi_uint8_array: arr = Napi::Uint8Array::New(env, n, buf, 0); break;
    case napi_int16_array: arr = Napi::Int16Array::New(env, n, buf, 0); break;
    case napi_uint16_array: arr = Napi::Uint16Array::New(env, n, buf, 0); break;
    case napi_int32_array: arr = Napi::Int32Array::New(env, n, buf, 0); break;
    case napi_uint32_array: arr = Napi::Uint32Array::New(env, n, buf, 0); break;
    case napi_bigint64_array: arr = Napi::BigInt64Array::New(env, n, buf, 0); break;
    case napi_biguint64_array: arr = Napi::BigUint64Array::New(env, n, buf, 0); break;
    default: throw ArgumentError("unsupported output array type");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::String::New(env, type_name));
  o.Set("dims", DimsToJs(env, dims));
  o.Set("data", arr);
  return o;
}

const TypeRow* RowFor(ONNXTensorElementDataType type, const char* type_name) {
  const TypeRow* row = Row(type);
  if (!row || row->size == 0) throw ArgumentError(std::string("cannot return a tensor of element type ") + type_name);
  return row;
}

// What an adopted ArrayBuffer keeps alive, and its size for V8's external-memory accounting.
struct Adopted {
  std::unique_ptr<HostBacking> owner;
  int64_t bytes;
};
}  // namespace

Napi::Object MakeHostTensor(Napi::Env env, const char* type_name, ONNXTensorElementDataType type,
                            const std::vector<int64_t>& dims, const void* data, size_t bytes) {
  const TypeRow* row = RowFor(type, type_name);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, bytes);
  if (bytes) std::memcpy(buf.Data(), data, bytes);
  return HostTensorOver(env, type_name, row, dims, buf, bytes);
}

Napi::Object AdoptHostTensor(Napi::Env env, const char* type_name, ONNXTensorElementDataType type,
                             const std::vector<int64_t>& dims, std::unique_ptr<HostBacking> owner, void* data,
                             size_t bytes) {
  const TypeRow* row = RowFor(type, type_name);
  // HUBMOE_NATIVE_COPY_OUTPUTS=1 copies every output (the behaviour before adoption; bench/host-outputs.mjs compares).
  static const bool always_copy = [] {
    const char* v = std::getenv("HUBMOE_NATIVE_COPY_OUTPUTS");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  if (always_copy || bytes < kAdoptMinBytes || !data) return MakeHostTensor(env, type_name, type, dims, data, bytes);
  auto* held = new Adopted{std::move(owner), static_cast<int64_t>(bytes)};
  Napi::ArrayBuffer buf;
  try {
    buf = Napi::ArrayBuffer::New(
        env, data, bytes,
        [](Napi::Env e, void*, Adopted* h) {
          Napi::MemoryManagement::AdjustExternalMemory(e, -h->bytes);
          delete h;
        },
        held);
  } catch (const Napi::Error&) {
    // A runtime that refuses external buffers (napi_no_external_buffers_allowed): copy instead.
    delete held;
    return MakeHostTensor(env, type_name, type, dims, data, bytes);
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, held->bytes);
  return HostTensorOver(env, type_name, row, dims, buf, bytes);
}

Napi::Object NumbersToJs(Napi::Env env, std::initializer_list<std::pair<const char*, double>> entries) {
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [key, value] : entries) o.Set(key, value);
  return o;
}

}  // namespace hubmoe
