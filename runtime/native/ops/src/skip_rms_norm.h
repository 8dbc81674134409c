// ai.hubmoe::SkipRMSNorm — a residual add and the RMSNorm of the sum, over the last axis (see ../README.md):
//
//   x [..., D], skip [..., D] (optional), weight [D], all T; y [..., D] and sum [..., D] (optional, only with skip)
//   s   = round_T(x + skip)                    (s = x without skip)
//   ms  = mean of s² over the row, in fp32     (in the fixed order below)
//   inv = 1 / sqrt(ms + epsilon)
//   y   = round_T(weight · round_T(s · inv))
//   sum = s
//
// round_T rounds to T (nothing for float32). This is transformers' residual add in the model dtype followed by its
// RMSNorm (JambaRMSNorm, MambaRMSNorm: fp32 statistics, `weight * hidden_states.to(input_dtype)`), whose normalized
// row is rounded to T before the weight multiplies it; ONNX Runtime's SkipSimplifiedLayerNormalization instead
// norms the unrounded fp32 sum and rounds once. The fused target writes one for every RMS block norm and the final
// norm; its CUDA kernel is a programmatic dependent launch like the other decode kernels.
//
// The sum of squares has one order, the same in the CPU and CUDA kernels, so that they give the same bytes: the row
// is cut into groups of 16 bytes (8 fp16 or 4 fp32 elements; the last may be shorter); a group's squares are added
// in order; group g goes to lane g mod 256, whose sum takes its groups in order; the 256 lane sums are added as a
// tree, r[i] += r[i + h] for h = 128, 64, …, 1. No step is a fused multiply-add.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

constexpr int kSkipRmsLanes = 256;  // lanes of the sum of squares (the CUDA block's threads)

struct SkipRmsNormArgs {
  int64_t rows = 0;  // product of x's leading dims
  int64_t D = 0;     // x's last dim
  float eps = 1e-6f;
  DType dtype = DType::f32;
  const void* x = nullptr;     // [rows, D]
  const void* skip = nullptr;  // [rows, D] or null
  const void* w = nullptr;     // [D]
  void* y = nullptr;           // [rows, D]
  void* sum = nullptr;         // [rows, D] or null (needs skip)
};

// Validates the shapes (an absent skip has rank < 0; `sum`: the sum output is requested) and fills rows and D.
void skip_rms_norm_check(const int64_t* x, int xr, const int64_t* skip, int sr, const int64_t* w, int wr, bool sum,
                         SkipRmsNormArgs& args);

// Rows in parallel.
void skip_rms_norm_cpu(const SkipRmsNormArgs& args, const Parallel& par);

namespace cuda {
// One block per row, a programmatic dependent launch; no host synchronisation.
void skip_rms_norm(const SkipRmsNormArgs& args, void* stream);
}  // namespace cuda

}  // namespace hubmoe
