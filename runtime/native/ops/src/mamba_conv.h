// ai.hubmoe::MambaConv — a Mamba mixer's input half through its masked causal convolution (see ../README.md):
//
//   xz [B, T, 2E] (in_proj's output), mask [B, T, 1], weight [E, 1, K], bias [E] (optional), state [B, E, K−1]
//   x[b, t, e]   = mask[b, t] · xz[b, t, e]                                       (e < E)
//   s            = state[b, e, 0…K−2] followed by x[b, 0…T−1, e]                  (K−1+T values, oldest first)
//   u[b, t, e]   = mask[b, t] · silu(Σ_k weight[e, 0, k] · s[t + k] + bias[e])   in fp32, rounded to T
//   z[b, t, e]   = xz[b, t, E + e]
//   state_out[b, e, j] = s[T + j]                                                  (the last K−1 values)
//
// It replaces the portable graph's Split, Mul (mask), CausalConvWithState (SiLU) and Mul (mask) with one launch.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

struct MambaConvArgs {
  int64_t B = 0, T = 0, E = 0, K = 0;
  DType dtype = DType::f32;
  const void* xz = nullptr;      // [B, T, 2E]
  const void* mask = nullptr;    // [B, T, 1]
  const void* weight = nullptr;  // [E, 1, K]
  const void* bias = nullptr;    // [E] or null
  const void* state = nullptr;   // [B, E, K−1]
  void* u = nullptr;             // [B, T, E]
  void* z = nullptr;             // [B, T, E]
  void* state_out = nullptr;     // [B, E, K−1]
};

// Validates the shapes (bias may be absent: rank −1) and fills B, T, E, K.
void mamba_conv_check(const int64_t* xz, int xz_rank, const int64_t* mask, int mask_rank, const int64_t* w, int w_rank,
                      const int64_t* bias, int bias_rank, const int64_t* state, int state_rank, MambaConvArgs& args);

void mamba_conv_cpu(const MambaConvArgs& args);

namespace cuda {
// One thread per (row, channel), walking the sequence; no host synchronisation.
void mamba_conv(const MambaConvArgs& args, void* stream);
}  // namespace cuda

}  // namespace hubmoe
