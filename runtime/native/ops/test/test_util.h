// Helpers shared by the kernel tests: random data, dtype round trips, error measures, a threaded Parallel.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "../src/common.h"

namespace testutil {

using hubmoe::DType;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); }
  std::vector<double> vec(size_t n, double lo, double hi) {
    std::vector<double> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
};

// A tensor held both as the kernel sees it (bytes of dtype) and as the reference sees it (the same values in
// double, i.e. after rounding to dtype).
struct Buf {
  DType dtype = DType::f32;
  std::vector<uint8_t> bytes;
  std::vector<double> vals;
  const void* data() const { return bytes.empty() ? nullptr : bytes.data(); }
  void* data() { return bytes.empty() ? nullptr : bytes.data(); }
  size_t size() const { return vals.size(); }
};

inline Buf make_buf(const std::vector<double>& v, DType t) {
  Buf b;
  b.dtype = t;
  b.bytes.resize(v.size() * hubmoe::dtype_size(t));
  b.vals.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::f32) {
      const float f = static_cast<float>(v[i]);
      std::memcpy(b.bytes.data() + 4 * i, &f, 4);
      b.vals[i] = f;
    } else {
      const uint16_t h = hubmoe::float_to_half(static_cast<float>(v[i]));
      std::memcpy(b.bytes.data() + 2 * i, &h, 2);
      b.vals[i] = hubmoe::half_to_float(h);
    }
  }
  return b;
}

inline Buf zeros(size_t n, DType t) { return make_buf(std::vector<double>(n, 0.0), t); }

// v rounded to t, as make_buf stores it.
inline double round_to(double v, DType t) {
  const float f = static_cast<float>(v);
  return t == DType::f32 ? f : hubmoe::half_to_float(hubmoe::float_to_half(f));
}

inline std::vector<double> read(const void* p, size_t n, DType t) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::f32) {
      float f;
      std::memcpy(&f, static_cast<const uint8_t*>(p) + 4 * i, 4);
      v[i] = f;
    } else {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(p) + 2 * i, 2);
      v[i] = hubmoe::half_to_float(h);
    }
  }
  return v;
}

// max |got − want| / max(max |want|, floor): the error relative to the output's scale.
inline double rel_err(const std::vector<double>& got, const std::vector<double>& want, double floor = 1e-30) {
  double scale = floor, err = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(got[i] - want[i]);
    if (!(d <= err)) err = std::isnan(d) ? INFINITY : d;
  }
  return err / scale;
}

struct ThreadParallel : hubmoe::Parallel {
  unsigned threads;
  explicit ThreadParallel(unsigned n) : threads(n) {}
  void run(size_t tasks, void (*body)(void*, size_t), void* ctx) const override {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        for (size_t i; (i = next.fetch_add(1)) < tasks;) body(ctx, i);
      });
    for (auto& th : pool) th.join();
  }
};

struct Tally {
  int passed = 0, failed = 0;
  std::vector<std::pair<std::string, double>> worst;  // largest error per category (first word + dtype)
  void note(const std::string& what, double err) {
    // category: the op name and the dtype, the first two words of `what` (e.g. "SelectiveScan float16")
    const size_t a = what.find(' '), b = a == std::string::npos ? a : what.find(' ', a + 1);
    const std::string cat = what.substr(0, b);
    for (auto& w : worst)
      if (w.first == cat) {
        w.second = std::max(w.second, err);
        return;
      }
    worst.emplace_back(cat, err);
  }
  void print_worst() const {
    for (const auto& w : worst) std::printf("  max error %-24s %.2e\n", w.first.c_str(), w.second);
  }
  void check(bool ok, const std::string& what, double err, double tol) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAIL %s: error %.3e > %.1e\n", what.c_str(), err, tol);
    }
  }
  void check_err(const std::string& what, double err, double tol) {
    note(what, err);
    check(err <= tol, what, err, tol);
  }
};

}  // namespace testutil
