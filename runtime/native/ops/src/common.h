// Shared definitions of hubmoe's custom-op kernels. Nothing here depends on ONNX Runtime or CUDA, so the
// kernels can be tested (and compared with each other) without either.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hubmoe {

enum class DType { f32, f16 };

inline const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "float16"; }
inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

// "[2, 3, 8]": a shape for error messages.
inline std::string dims_str(const int64_t* d, int rank) {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Bad input (shapes, attributes, types): the message names the op and what is wrong.
struct OpError : std::runtime_error {
  explicit OpError(const std::string& m) : std::runtime_error(m) {}
};

// IEEE binary16 stored as its bits. Layout-compatible with Ort::Float16_t and CUDA's __half.
struct half_t {
  uint16_t bits;
};

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, with overflow to inf and gradual underflow (matches __float2half_rn).
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);  // nan / inf
  if (ax >= 0x477ff000u) return sign | 0x7c00u;                                   // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                                                         // below 2^-14: subnormal or zero
    if (ax < 0x33000000u) return sign;                                            // < 2^-25: rounds to 0
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24 → value = m >> (shift) in half-subnormal units
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = ax + 0xc8000fffu + ((ax >> 13) & 1u);  // rebias exponent (-112 << 23) and round to nearest even
  return sign | static_cast<uint16_t>(r >> 13);
}

inline float to_float(float v) { return v; }
inline float to_float(half_t v) { return half_to_float(v.bits); }
template <typename T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) {
  return v;
}
template <>
inline half_t from_float<half_t>(float v) {
  return half_t{float_to_half(v)};
}

// Runs fn(begin, end) over [0, n) in chunks, possibly in parallel. The ORT kernels pass the session's intra-op
// thread pool (KernelContext::ParallelFor); tests run serially or with their own threads.
struct Parallel {
  virtual ~Parallel() = default;
  // Calls body(i) for i in [0, tasks); tasks may run concurrently.
  virtual void run(size_t tasks, void (*body)(void* ctx, size_t i), void* ctx) const = 0;

  template <typename F>
  void for_range(size_t n, size_t grain, F&& fn) const {
    if (n == 0) return;
    if (grain == 0) grain = 1;
    const size_t tasks = (n + grain - 1) / grain;
    struct Ctx {
      F* fn;
      size_t n, grain;
    } c{&fn, n, grain};
    if (tasks == 1) {
      fn(size_t{0}, n);
      return;
    }
    run(
        tasks,
        [](void* p, size_t i) {
          auto* c = static_cast<Ctx*>(p);
          const size_t b = i * c->grain;
          const size_t e = b + c->grain < c->n ? b + c->grain : c->n;
          (*c->fn)(b, e);
        },
        &c);
  }
};

struct SerialParallel : Parallel {
  void run(size_t tasks, void (*body)(void*, size_t), void* ctx) const override {
    for (size_t i = 0; i < tasks; ++i) body(ctx, i);
  }
};

}  // namespace hubmoe
