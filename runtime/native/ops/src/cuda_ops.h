// CUDA kernels of the ai.hubmoe ops, behind an interface free of CUDA and ONNX Runtime headers. All pointers in
// the args are device pointers; `stream` is a cudaStream_t. Errors are thrown as hubmoe::OpError.
#pragma once

#include <cstddef>
#include <memory>

#include "linear.h"
#include "moe.h"
#include "selective_scan.h"

namespace hubmoe {
namespace cuda {

// Kernel variants of the scan: lanes per channel × states per lane. kScanAuto picks one from the shape.
enum ScanVariant { kScanAuto = -1, kScanG4 = 0, kScanG8 = 1, kScanG16 = 2, kScanG32 = 3 };
const char* scan_variant_name(int v);
void selective_scan(const ScanArgs& args, void* stream, int variant = kScanAuto);

// How the MoE experts are computed:
//  - skinny: every token's experts in one launch per projection (fused gather, bias, activation, GLU), reading each
//    used expert's weights once; no host synchronisation. Best while tokens per expert are few (decode).
//    With input-major weights (MoeArgs::layout) the skinny path is a sparse kernel instead: per K chunk it reads
//    only the weight rows of non-zero inputs (SCAP-pruned ones are zero) and writes fp32 partial sums, which a
//    finalize (after fc1) and the combine (after fc2) add up.
//  - gemm: tokens grouped per expert, then cuBLAS GEMMs per expert (tensor cores); needs the per-expert counts on
//    the host: one device→host copy and stream synchronisation per call. Best for prefill.
enum class MoePath { automatic, skinny, gemm };
const char* moe_path_name(MoePath p);

// One instance per ORT kernel (or test): owns the cuBLAS handle (loaded with dlopen on first use) and a pinned
// host buffer for the gemm path's counts. Thread-safe.
class MoeRunner {
 public:
  MoeRunner();
  ~MoeRunner();
  MoeRunner(const MoeRunner&) = delete;
  MoeRunner& operator=(const MoeRunner&) = delete;

  // The path `run` takes for these args (automatic resolves by S; gemm falls back to skinny without cuBLAS).
  MoePath resolve(const MoeArgs& args, MoePath requested) const;
  // Bytes of device scratch `run` needs (256-byte aligned pieces).
  size_t workspace_bytes(const MoeArgs& args, MoePath path) const;
  void run(const MoeArgs& args, void* workspace, size_t workspace_bytes, void* stream, MoePath path);
  // Tests and experiments: the K rows per block of the input-major skinny kernel (0, the default: chosen from the
  // shapes). Changes workspace_bytes.
  void set_input_major_chunk(int rows) { im_chunk_ = rows > 0 ? rows : 0; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int im_chunk_ = 0;
};

// How Linear computes y = x · Wᵀ + bias:
//  - gemv: one launch (the MoE op's skinny kernel over the one weight matrix): each warp reads whole weight rows as
//    16-byte vectors and writes its outputs with the bias; no split-K partial sums, no host synchronisation. For one
//    or two tokens (decode).
//  - gemm: a cuBLAS GEMM (fp32 accumulation, T out), then a bias kernel if there is a bias. Falls back to gemv
//    without cuBLAS.
enum class LinearPath { automatic, gemv, gemm };
const char* linear_path_name(LinearPath p);

class LinearRunner {
 public:
  LinearRunner();
  ~LinearRunner();
  LinearRunner(const LinearRunner&) = delete;
  LinearRunner& operator=(const LinearRunner&) = delete;
  // automatic: gemv up to 2 tokens ($HUBMOE_LINEAR_GEMV_MAX_S overrides), else gemm.
  LinearPath resolve(const LinearArgs& args, LinearPath requested) const;
  void run(const LinearArgs& args, void* stream, LinearPath path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether cuBLAS could be loaded (libcublas.so.13, or $HUBMOE_CUBLAS); the reason when not.
bool cublas_available(std::string* why = nullptr);

}  // namespace cuda
}  // namespace hubmoe
