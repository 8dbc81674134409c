// CPU MambaMixer: the chain of the op's definition, step by step, with the existing CPU kernels (MambaConv,
// the input-major linear layer, SplitRMSNorm, SelectiveScan) and the same roundings to T between the steps.
#include <string>
#include <vector>

#include "linear_cpu.h"
#include "mamba_mixer.h"
#include "split_rms_norm.h"

namespace hubmoe {

namespace {

std::string s(int64_t v) { return std::to_string(v); }

[[noreturn]] void bad(const char* name, const std::string& want, const ShapeRef& got) {
  throw OpError(std::string("MambaMixer: input '") + name + "' must be " + want + ", got " +
                (got.present() ? dims_str(got.dims, got.rank) : std::string("nothing")));
}

bool is(const ShapeRef& r, std::initializer_list<int64_t> want) {
  if (r.rank != static_cast<int>(want.size())) return false;
  int i = 0;
  for (int64_t w : want)
    if (r.dims[i++] != w) return false;
  return true;
}

}  // namespace

void mamba_mixer_check(const ShapeRef& xz, const ShapeRef& mask, const ShapeRef& cw, const ShapeRef& cb,
                       const ShapeRef& cs, const ShapeRef& xp, const ShapeRef& dp, const ShapeRef& dbias,
                       const ShapeRef& A, const ShapeRef& D, const ShapeRef& ss, const ShapeRef* norms,
                       MambaMixerArgs& a) {
  if (xz.rank != 3 || xz.dims[2] % 2 != 0) bad("xz", "[batch, sequence, 2·channels]", xz);
  const int64_t B = xz.dims[0], T = xz.dims[1], E = xz.dims[2] / 2;
  if (!is(mask, {B, T, 1})) bad("mask", "[" + s(B) + ", " + s(T) + ", 1]", mask);
  if (cw.rank != 3 || cw.dims[0] != E || cw.dims[1] != 1 || cw.dims[2] < 1) bad("conv_weight", "[" + s(E) + ", 1, kernel]", cw);
  const int64_t K = cw.dims[2];
  if (cb.present() && !is(cb, {E})) bad("conv_bias", "[" + s(E) + "]", cb);
  if (!is(cs, {B, E, K - 1})) bad("conv_state", "[" + s(B) + ", " + s(E) + ", " + s(K - 1) + "]", cs);
  if (A.rank != 2 || A.dims[0] != E || A.dims[1] < 1) bad("A", "[" + s(E) + ", d_state]", A);
  const int64_t N = A.dims[1];
  if (dp.rank != 2 || dp.dims[1] != E || dp.dims[0] < 1) bad("dt_proj", "[dt_rank, " + s(E) + "]", dp);
  const int64_t R = dp.dims[0];
  if (!is(xp, {E, R + 2 * N})) bad("x_proj", "[" + s(E) + ", " + s(R + 2 * N) + "] (dt_rank + 2·d_state columns)", xp);
  if (dbias.present() && !is(dbias, {E})) bad("dt_bias", "[" + s(E) + "]", dbias);
  if (!is(D, {E})) bad("D", "[" + s(E) + "]", D);
  if (!is(ss, {B, E, N})) bad("ssm_state", "[" + s(B) + ", " + s(E) + ", " + s(N) + "]", ss);
  const int n_norms = norms[0].present() + norms[1].present() + norms[2].present();
  if (n_norms != 0 && n_norms != 3)
    throw OpError("MambaMixer: inputs 'dt_norm', 'b_norm' and 'c_norm' must be all present or all absent, got " +
                  s(n_norms) + " of them");
  if (n_norms) {
    if (!is(norms[0], {R})) bad("dt_norm", "[" + s(R) + "]", norms[0]);
    if (!is(norms[1], {N})) bad("b_norm", "[" + s(N) + "]", norms[1]);
    if (!is(norms[2], {N})) bad("c_norm", "[" + s(N) + "]", norms[2]);
  }
  a.B = B, a.T = T, a.E = E, a.K = K, a.N = N, a.R = R;
}

MambaConvArgs MambaMixerArgs::conv(void* u, void* z) const {
  MambaConvArgs c;
  c.B = B, c.T = T, c.E = E, c.K = K, c.dtype = dtype;
  c.xz = xz, c.mask = mask, c.weight = conv_weight, c.bias = conv_bias, c.state = conv_state;
  c.u = u, c.z = z, c.state_out = conv_state_out;
  return c;
}

ScanArgs MambaMixerArgs::scan(const void* u, const void* z, const void* dt_raw, const void* Bm, const void* Cm) const {
  ScanArgs s;
  s.B = B, s.L = T, s.E = E, s.N = N, s.dtype = dtype;
  s.x = u, s.dt = dt_raw, s.A = A, s.Bm = Bm, s.Cm = Cm, s.D = D, s.z = z, s.dt_bias = dt_bias, s.state_in = ssm_state;
  s.y = y, s.state_out = ssm_state_out, s.delta_softplus = true;
  return s;
}

namespace {

template <typename T>
void impl(const MambaMixerArgs& a, const Parallel& par) {
  const int64_t S = a.B * a.T, E = a.E, N = a.N, R = a.R, J = a.J();
  std::vector<T> u(static_cast<size_t>(S * E)), z(u.size());
  mamba_conv_cpu(a.conv(u.data(), z.data()));
  // x_proj, then dt/B/C (normed or not) in T, as the graph's MatMul and SplitRMSNorm (or Split) store them
  std::vector<float> in(static_cast<size_t>(S * E)), acc(static_cast<size_t>(S * J));
  for (size_t i = 0; i < in.size(); ++i) in[i] = to_float(u[i]);
  linear_input_major<T>(in.data(), S, E, static_cast<const T*>(a.x_proj), nullptr, J, acc.data(), par);
  std::vector<T> xdbl(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) xdbl[i] = from_float<T>(acc[i]);
  std::vector<T> dt(static_cast<size_t>(S * R)), Bm(static_cast<size_t>(S * N)), Cm(Bm.size());
  if (a.norms()) {
    SplitRmsNormArgs n;
    n.rows = S, n.D = J, n.G = 3, n.len[0] = R, n.len[1] = N, n.len[2] = N, n.eps = a.eps, n.dtype = a.dtype;
    n.x = xdbl.data();
    for (int g = 0; g < 3; ++g) n.w[g] = a.norm[g];
    n.y[0] = dt.data(), n.y[1] = Bm.data(), n.y[2] = Cm.data();
    split_rms_norm_cpu(n);
  } else {
    for (int64_t r = 0; r < S; ++r) {
      const T* row = xdbl.data() + r * J;
      std::copy(row, row + R, dt.begin() + r * R);
      std::copy(row + R, row + R + N, Bm.begin() + r * N);
      std::copy(row + R + N, row + J, Cm.begin() + r * N);
    }
  }
  // dt_proj without its bias (the scan adds dt_bias in fp32), rounded to T
  std::vector<float> dtf(dt.size()), raw(static_cast<size_t>(S * E));
  for (size_t i = 0; i < dt.size(); ++i) dtf[i] = to_float(dt[i]);
  linear_input_major<T>(dtf.data(), S, R, static_cast<const T*>(a.dt_proj), nullptr, E, raw.data(), par);
  std::vector<T> dt_raw(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) dt_raw[i] = from_float<T>(raw[i]);
  selective_scan_cpu(a.scan(u.data(), z.data(), dt_raw.data(), Bm.data(), Cm.data()), par);
}

}  // namespace

void mamba_mixer_cpu(const MambaMixerArgs& a, const Parallel& par) {
  if (a.B * a.T == 0) {
    // no tokens: the states pass through (SelectiveScan and MambaConv with T = 0)
    mamba_conv_cpu(a.conv(nullptr, nullptr));
    selective_scan_cpu(a.scan(nullptr, nullptr, nullptr, nullptr, nullptr), par);
    return;
  }
  if (a.dtype == DType::f16) impl<half_t>(a, par);
  else impl<float>(a, par);
}

}  // namespace hubmoe
