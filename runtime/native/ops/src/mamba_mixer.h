// ai.hubmoe::MambaMixer — everything of a Mamba-1 mixer between in_proj and out_proj, in one op (see ../README.md):
//
//   u, z, conv_state_out = MambaConv(xz, mask, conv_weight, conv_bias, conv_state)
//   xdbl      = round_T(u · x_proj)                       x_proj [E, R + 2N] input-major, fp32 accumulation
//   dt, Bm, Cm = xdbl[..., 0:R], xdbl[..., R:R+N], xdbl[..., R+N:R+2N]
//   (with norms) dt, Bm, Cm = SplitRMSNorm(xdbl; dt_norm, b_norm, c_norm, epsilon)      each rounded to T
//   dt_raw    = round_T(dt · dt_proj)                     dt_proj [R, E] input-major, fp32 accumulation
//   y, ssm_state_out = SelectiveScan(u, dt_raw, A, Bm, Cm, D, z, dt_bias, ssm_state, delta_softplus = 1)
//
// i.e. exactly the fused target's MambaConv → MatMul → (SplitRMSNorm | Split) → MatMul → SelectiveScan chain, with
// the same roundings to T between the steps. At one token per row (decode) the CUDA kernel runs the chain in three
// launches instead of six (conv with x_proj's partial sums, their reduction, then the norms, dt_proj and the scan
// step); longer sequences run the chain's own kernels and cuBLAS GEMMs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common.h"
#include "mamba_conv.h"
#include "selective_scan.h"

namespace hubmoe {

struct MambaMixerArgs {
  int64_t B = 0, T = 0, E = 0, K = 0, N = 0, R = 0;
  DType dtype = DType::f32;
  float eps = 1e-6f;
  const void* xz = nullptr;           // [B, T, 2E] T
  const void* mask = nullptr;         // [B, T, 1] T
  const void* conv_weight = nullptr;  // [E, 1, K] T
  const void* conv_bias = nullptr;    // [E] T or null
  const void* conv_state = nullptr;   // [B, E, K−1] T
  const void* x_proj = nullptr;       // [E, R + 2N] T
  const void* dt_proj = nullptr;      // [R, E] T
  const float* dt_bias = nullptr;     // [E] or null
  const float* A = nullptr;           // [E, N]
  const float* D = nullptr;           // [E]
  const float* ssm_state = nullptr;   // [B, E, N]
  const void* norm[3] = {};           // dt_norm [R], b_norm [N], c_norm [N] (T): all three or none
  void* y = nullptr;                  // [B, T, E] T
  void* conv_state_out = nullptr;     // [B, E, K−1] T
  float* ssm_state_out = nullptr;     // [B, E, N]
  int64_t J() const { return R + 2 * N; }
  bool norms() const { return norm[0] != nullptr; }
  // The MambaConv and SelectiveScan parts, with u, z, dt_raw, Bm, Cm where the caller put them.
  MambaConvArgs conv(void* u, void* z) const;
  ScanArgs scan(const void* u, const void* z, const void* dt_raw, const void* Bm, const void* Cm) const;
};

// Validates every input's shape (an absent optional input has rank −1; the three norms must be all present or all
// absent) and fills B, T, E, K, N, R.
void mamba_mixer_check(const ShapeRef& xz, const ShapeRef& mask, const ShapeRef& conv_weight, const ShapeRef& conv_bias,
                       const ShapeRef& conv_state, const ShapeRef& x_proj, const ShapeRef& dt_proj,
                       const ShapeRef& dt_bias, const ShapeRef& A, const ShapeRef& D, const ShapeRef& ssm_state,
                       const ShapeRef* norms, MambaMixerArgs& args);

void mamba_mixer_cpu(const MambaMixerArgs& args, const Parallel& par);

namespace cuda {

// One instance per ORT kernel (or test): owns the cuBLAS handle of the sequence path. Thread-safe.
class MambaMixerRunner {
 public:
  MambaMixerRunner();
  ~MambaMixerRunner();
  MambaMixerRunner(const MambaMixerRunner&) = delete;
  MambaMixerRunner& operator=(const MambaMixerRunner&) = delete;
  // Whether `run` takes the three-launch decode path for these args (T = 1 and the sizes it supports), unless
  // forced off (tests, experiments; HUBMOE_MIXER_PATH=chain in the ORT kernel).
  static bool decode_path(const MambaMixerArgs& args);
  size_t workspace_bytes(const MambaMixerArgs& args, bool allow_decode = true) const;
  void run(const MambaMixerArgs& args, void* workspace, size_t workspace_bytes, void* stream, bool allow_decode = true);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda

}  // namespace hubmoe
