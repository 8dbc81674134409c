// ai.hubmoe::StaticAttentionMask — the attention bias and KV-cache write positions of a static-cache step in one
// launch (see ../README.md). With slots s = 0 … S−1 of the window, positions q_i = cache_position[i] (i < T,
// consecutive), first = q_0 and last = q_{T−1}:
//
//   bias[b, 0, g·T + i, s] = 0 if mask[b, s] ≠ 0 and s ≤ q_i, else the lowest fp32 (−3.4028235e38)   g < groups
//   is_new[0, 0, s, 0]     = first ≤ s ≤ last                                (the slots this step writes)
//   source[s]              = min(max(s − first, 0), last − first)          (the step's token each slot takes)
//
// This is what src/onnx/build.ts computes with about twenty elementwise ONNX nodes (CumSum, Gather, Sub, Min, Max,
// comparisons, And, Where) for the static-cache graph, which at one decode token are as many launches.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

struct StaticMaskArgs {
  int64_t B = 0, S = 0, T = 0, groups = 1;
  const int64_t* mask = nullptr;      // [B, S]
  const int64_t* position = nullptr;  // [T]
  float* bias = nullptr;              // [B, 1, groups·T, S]
  bool* is_new = nullptr;             // [1, 1, S, 1] or null
  int64_t* source = nullptr;          // [S] or null
};

constexpr float kMaskedBias = -3.4028234663852886e38f;

// Validates mask ([B, S]) and cache_position ([T], T ≥ 1) and fills B, S, T.
void static_mask_check(const int64_t* mask_dims, int mask_rank, const int64_t* pos_dims, int pos_rank, StaticMaskArgs& args);

// All pointers are host memory (the CPU execution provider's tensors).
void static_mask_cpu(const StaticMaskArgs& args);

namespace cuda {
// One launch; reads cache_position on the device (no host synchronisation).
void static_mask(const StaticMaskArgs& args, void* stream);
}  // namespace cuda

}  // namespace hubmoe
