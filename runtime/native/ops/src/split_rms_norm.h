// ai.hubmoe::SplitRMSNorm — RMSNorms of consecutive segments of the last axis (see ../README.md):
//
//   x [..., D] with D = D_0 + … + D_{G−1}, G = 1…3 weights w_g [D_g]; segment g is x[..., o_g : o_g + D_g]
//   y_g[..., i] = w_g[i] · x_g[..., i] / sqrt(mean_i x_g[..., i]² + epsilon)
//
// computed in fp32 whatever T, one output per weight. Jamba's x_proj output is split into dt, B and C and each is
// RMS-normed (dt_layernorm, b_layernorm, c_layernorm): one launch instead of a Split and three
// SimplifiedLayerNormalization nodes.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

constexpr int kSplitRmsMaxGroups = 3;

struct SplitRmsNormArgs {
  int64_t rows = 0;                      // product of x's leading dims
  int64_t D = 0;                         // x's last dim
  int G = 0;                             // segments (weights)
  int64_t len[kSplitRmsMaxGroups] = {};  // D_g
  float eps = 1e-6f;
  DType dtype = DType::f32;
  const void* x = nullptr;                      // [rows, D]
  const void* w[kSplitRmsMaxGroups] = {};       // [D_g]
  void* y[kSplitRmsMaxGroups] = {};             // [rows, D_g]
};

// Validates x's rank (≥ 1) and that the weights are vectors whose lengths add up to x's last dim; fills rows, D,
// G and len. `wdims[g]`/`wrank[g]` are the weights' shapes.
void split_rms_norm_check(const int64_t* xdims, int xrank, int G, const int64_t* const* wdims, const int* wrank,
                          SplitRmsNormArgs& args);

void split_rms_norm_cpu(const SplitRmsNormArgs& args);

namespace cuda {
// One block per row; no host synchronisation.
void split_rms_norm(const SplitRmsNormArgs& args, void* stream);
}  // namespace cuda

}  // namespace hubmoe
