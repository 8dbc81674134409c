// ai.hubmoe::SparseLinear — a fully-connected layer whose input is pruned by SCAP (see ../README.md):
//
//   v = x − mode;   x_s = |v| > threshold ? round_T(v) : 0;   y = x_s · W + bias
//
// W is stored input-major, [K, N] (the layout of ONNX MatMul's second input), so a zeroed input element skips a
// whole contiguous weight row: at decode only the rows of kept inputs are read.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common.h"

namespace hubmoe {

struct SparseLinearArgs {
  int64_t S = 0, K = 0, N = 0;  // tokens (product of x's leading dims), input features, output features
  DType dtype = DType::f32;     // T: x, W, bias, y
  float mode = 0.f, threshold = 0.f;
  const void* x = nullptr;     // [S, K]
  const void* W = nullptr;     // [K, N]
  const void* bias = nullptr;  // [N], optional
  void* y = nullptr;           // [S, N]
};

struct ShapeRef;
// Validates the shapes (x [..., K], W [K, N], bias [N]) and fills S, K, N. An absent bias has rank < 0.
void sparse_linear_check(const int64_t* x, int xr, const int64_t* w, int wr, const int64_t* b, int br,
                         SparseLinearArgs& args);

void sparse_linear_cpu(const SparseLinearArgs& args, const Parallel& par);

namespace cuda {

// How the CUDA kernel computes y:
//  - sparse: for few tokens (decode): each block prunes a chunk of K for every token, compacts the indices of the
//    rows some token keeps, and reads only those weight rows. The chunks of a column tile form a thread-block
//    cluster and add their sums through distributed shared memory (one launch); where clusters are unavailable
//    (or HUBMOE_SPARSE_WARPS=0), partial sums over K chunks are added by a second launch with the bias (the split
//    form). No host synchronisation.
//  - dense: for many tokens (prefill): a masking kernel, a cuBLAS GEMM (fp32 accumulation), a bias kernel.
enum class SparsePath { automatic, sparse, dense };
const char* sparse_path_name(SparsePath p);

class SparseLinearRunner {
 public:
  SparseLinearRunner();
  ~SparseLinearRunner();
  SparseLinearRunner(const SparseLinearRunner&) = delete;
  SparseLinearRunner& operator=(const SparseLinearRunner&) = delete;

  // automatic: sparse up to kSparseMaxTokens tokens (HUBMOE_SPARSE_MAX_S overrides), else dense; dense falls back
  // to sparse without cuBLAS.
  SparsePath resolve(const SparseLinearArgs& args, SparsePath requested) const;
  size_t workspace_bytes(const SparseLinearArgs& args, SparsePath path) const;
  void run(const SparseLinearArgs& args, void* workspace, size_t workspace_bytes, void* stream, SparsePath path);
  // Tests and experiments: the sparse path's form. warps: -1 automatic ($HUBMOE_SPARSE_WARPS when set, else 8 per
  // block, 16 for narrow layers), 0 the split form, 8 or 16 the cluster form with that many warps per block;
  // cluster: blocks per cluster (0 automatic, $HUBMOE_SPARSE_CLUSTER; capped at what the device schedules). The
  // cluster form applies to one token (S = 1); more tokens take the split form. Changes workspace_bytes.
  void set_sparse_form(int warps, int cluster = 0) {
    warps_ = warps;
    cluster_ = cluster;
  }
  // The sparse path's launch shape for these args, in words.
  std::string sparse_form(const SparseLinearArgs& args) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int warps_ = -1, cluster_ = 0;
};

}  // namespace cuda
}  // namespace hubmoe
