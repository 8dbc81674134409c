#include <algorithm>
#include <cmath>
#include <vector>

#include "selective_scan.h"

namespace hubmoe {

namespace {

std::string dims_str(const ShapeRef& s) { return hubmoe::dims_str(s.dims, s.rank); }

void expect(const ShapeRef& s, const char* name, std::initializer_list<int64_t> want) {
  bool ok = s.rank == static_cast<int>(want.size());
  if (ok) {
    int i = 0;
    for (int64_t w : want) ok = ok && s.dims[i++] == w;
  }
  if (!ok) {
    std::string w = "[";
    int i = 0;
    for (int64_t v : want) w += (i++ ? ", " : "") + std::to_string(v);
    throw OpError(std::string("SelectiveScan: input '") + name + "' has shape " + dims_str(s) + ", expected " + w + "]");
  }
}

template <typename T>
void scan_impl(const ScanArgs& a, const Parallel& par) {
  const int64_t B = a.B, L = a.L, E = a.E, N = a.N;
  const T* x = static_cast<const T*>(a.x);
  const T* dt = static_cast<const T*>(a.dt);
  const T* Bm = static_cast<const T*>(a.Bm);
  const T* Cm = static_cast<const T*>(a.Cm);
  const T* z = static_cast<const T*>(a.z);
  T* y = static_cast<T*>(a.y);
  constexpr int64_t kBlock = 32;  // channels per task: rows of x/dt/z are read 32 channels at a time
  const int64_t blocks_per_batch = (E + kBlock - 1) / kBlock;
  par.for_range(static_cast<size_t>(B * blocks_per_batch), 1, [&](size_t begin, size_t end) {
    std::vector<float> h(static_cast<size_t>(kBlock * N));
    std::vector<float> bc(static_cast<size_t>(2 * N));
    for (size_t task = begin; task < end; ++task) {
      const int64_t b = static_cast<int64_t>(task) / blocks_per_batch;
      const int64_t e0 = (static_cast<int64_t>(task) % blocks_per_batch) * kBlock;
      const int64_t ne = std::min(kBlock, E - e0);
      for (int64_t c = 0; c < ne; ++c)
        for (int64_t n = 0; n < N; ++n)
          h[c * N + n] = a.state_in ? a.state_in[(b * E + e0 + c) * N + n] : 0.f;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = (b * L + t);
        for (int64_t n = 0; n < N; ++n) {
          bc[n] = to_float(Bm[row * N + n]);
          bc[N + n] = to_float(Cm[row * N + n]);
        }
        for (int64_t c = 0; c < ne; ++c) {
          const int64_t e = e0 + c;
          const int64_t i = row * E + e;
          float d = to_float(dt[i]) + (a.dt_bias ? a.dt_bias[e] : 0.f);
          if (a.delta_softplus) d = softplus(d);
          const float xv = to_float(x[i]);
          const float dx = d * xv;
          const float* Ae = a.A + e * N;
          float* he = h.data() + c * N;
          float acc = 0.f;
          for (int64_t n = 0; n < N; ++n) {
            he[n] = std::exp(d * Ae[n]) * he[n] + dx * bc[n];
            acc += bc[N + n] * he[n];
          }
          float yv = acc + a.D[e] * xv;
          if (z) {
            const float zv = to_float(z[i]);
            yv *= zv / (1.f + std::exp(-zv));
          }
          y[i] = from_float<T>(yv);
        }
      }
      for (int64_t c = 0; c < ne; ++c)
        for (int64_t n = 0; n < N; ++n) a.state_out[(b * E + e0 + c) * N + n] = h[c * N + n];
    }
  });
}

}  // namespace

void scan_check_shapes(const ShapeRef& x, const ShapeRef& dt, const ShapeRef& A, const ShapeRef& Bm, const ShapeRef& Cm,
                       const ShapeRef& D, const ShapeRef& z, const ShapeRef& dt_bias, const ShapeRef& state_in,
                       ScanArgs& args) {
  if (x.rank != 3) throw OpError("SelectiveScan: input 'x' must be [B, L, E], got " + dims_str(x));
  if (A.rank != 2) throw OpError("SelectiveScan: input 'A' must be [E, N], got " + dims_str(A));
  const int64_t B = x.dims[0], L = x.dims[1], E = x.dims[2], N = A.dims[1];
  expect(dt, "dt", {B, L, E});
  expect(A, "A", {E, N});
  expect(Bm, "Bm", {B, L, N});
  expect(Cm, "Cm", {B, L, N});
  expect(D, "D", {E});
  if (z.present()) expect(z, "z", {B, L, E});
  if (dt_bias.present()) expect(dt_bias, "dt_bias", {E});
  if (state_in.present()) expect(state_in, "state_in", {B, E, N});
  args.B = B;
  args.L = L;
  args.E = E;
  args.N = N;
}

void selective_scan_cpu(const ScanArgs& a, const Parallel& par) {
  if (a.dtype == DType::f32)
    scan_impl<float>(a, par);
  else
    scan_impl<half_t>(a, par);
}

}  // namespace hubmoe
