// ai.hubmoe::SelectiveScan — Mamba-1's selective scan with its D skip and SiLU(z) gate (see ../README.md).
#pragma once

#include <cmath>

#include "common.h"

namespace hubmoe {

struct ScanArgs {
  int64_t B = 0, L = 0, E = 0, N = 0;
  DType dtype = DType::f32;  // type T of x, dt, Bm, Cm, z, y
  const void* x = nullptr;   // [B, L, E] T
  const void* dt = nullptr;  // [B, L, E] T (dt_proj output without its bias)
  const float* A = nullptr;  // [E, N]   (−exp(A_log))
  const void* Bm = nullptr;  // [B, L, N] T
  const void* Cm = nullptr;  // [B, L, N] T
  const float* D = nullptr;  // [E]
  const void* z = nullptr;   // [B, L, E] T, optional
  const float* dt_bias = nullptr;   // [E], optional
  const float* state_in = nullptr;  // [B, E, N], optional (zeros)
  void* y = nullptr;                // [B, L, E] T
  float* state_out = nullptr;       // [B, E, N]
  bool delta_softplus = true;
};

// Checks the shapes of the op's inputs and fills B, L, E, N. Shapes are given as (dims, rank) pairs; an absent
// optional input has rank < 0.
struct ShapeRef {
  const int64_t* dims = nullptr;
  int rank = -1;
  bool present() const { return rank >= 0; }
};
void scan_check_shapes(const ShapeRef& x, const ShapeRef& dt, const ShapeRef& A, const ShapeRef& Bm, const ShapeRef& Cm,
                       const ShapeRef& D, const ShapeRef& z, const ShapeRef& dt_bias, const ShapeRef& state_in,
                       ScanArgs& args);

void selective_scan_cpu(const ScanArgs& args, const Parallel& par);

inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }

}  // namespace hubmoe
