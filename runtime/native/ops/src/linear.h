// ai.hubmoe::Linear — a fully-connected layer with PyTorch's weight layout (see ../README.md):
//
//   y = x · Wᵀ + bias,   x [..., K], W [N, K] (a weight row per output), bias [N] optional, y [..., N]
//
// with fp32 accumulation. On the GPU at one or two tokens it is one GEMV launch that reads each weight row once as
// 16-byte vectors (no split-K partial sums to add afterwards); past that, a cuBLAS GEMM.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

struct LinearArgs {
  int64_t S = 0, K = 0, N = 0;  // tokens (product of x's leading dims), input features, output features
  DType dtype = DType::f32;     // T: x, W, bias, y
  const void* x = nullptr;      // [S, K]
  const void* W = nullptr;      // [N, K]
  const void* bias = nullptr;   // [N], optional
  void* y = nullptr;            // [S, N]
};

// Validates the shapes (x [..., K], W [N, K], bias [N]; an absent bias has rank < 0) and fills S, K, N.
void linear_check(const int64_t* x, int xr, const int64_t* w, int wr, const int64_t* b, int br, LinearArgs& args);

void linear_cpu(const LinearArgs& args, const Parallel& par);

}  // namespace hubmoe
