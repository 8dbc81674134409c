// SparseLinear on CUDA against the CPU kernel (which test_cpu checks against a double reference), both paths, and
// its decode timings at Jamba-v0.1 sizes against a dense cuBLAS GEMM of the same layer. Included by test_cuda.cu
// after its helpers (Dev, dev, cpu_par, time_us).
#pragma once

#include "../src/cublas_loader.h"
#include "../src/sparse_linear.h"
#include "sparse_linear_tests.h"

namespace {

std::vector<uint8_t> run_sparse_cuda(const SparseProblem& p, hc::SparsePath path, hc::SparseLinearRunner& runner,
                                     size_t w_offset_elems = 0) {
  const size_t es = hubmoe::dtype_size(p.dtype);
  Dev x = dev(p.x), b = dev(p.bias);
  // W at an offset of w_offset_elems elements: a misaligned weight takes the scalar path.
  Dev w(p.W.bytes.size() + w_offset_elems * es);
  CK(cudaMemcpy(static_cast<uint8_t*>(w.p) + w_offset_elems * es, p.W.bytes.data(), p.W.bytes.size(),
                cudaMemcpyHostToDevice));
  Dev y(static_cast<size_t>(p.S * p.N) * es);
  hubmoe::SparseLinearArgs a = p.args();
  a.x = x.p, a.W = static_cast<uint8_t*>(w.p) + w_offset_elems * es, a.bias = p.bias.size() ? b.p : nullptr, a.y = y.p;
  const hc::SparsePath resolved = runner.resolve(a, path);
  Dev ws(runner.workspace_bytes(a, resolved));
  runner.run(a, ws.p, ws.bytes, nullptr, resolved);
  CK(cudaDeviceSynchronize());
  return y.host();
}

// The sparse path's forms under test: {warps, cluster} as SparseLinearRunner::set_sparse_form takes them — the split
// form, the cluster form as chosen automatically with 8 and 16 warps, and forced cluster sizes (a non-power of two,
// and chunks longer than one shared-memory piece).
struct SparseForm {
  int warps, cluster;
};
constexpr SparseForm kSparseForms[] = {{0, 0}, {8, 0}, {16, 0}, {8, 2}, {16, 3}};

void sparse_correctness(Tally& t, double& e32, double& e16) {
  hc::SparseLinearRunner runner;
  uint64_t seed = 9000;
  struct Shape {
    int64_t S, K, N;
  };
  const Shape shapes[] = {{1, 37, 5}, {1, 512, 256}, {1, 1100, 1024}, {2, 600, 260}, {4, 1024, 512},
                          {5, 700, 96},  {17, 530, 200}, {1, 4096, 64}, {3, 0, 16}};
  for (hc::SparsePath path : {hc::SparsePath::sparse, hc::SparsePath::dense})
    for (DType dt : {DType::f32, DType::f16})
      for (const Shape& sh : shapes)
        for (bool bias : {false, true})
          for (double sp : {0.5, -1.0}) {
            SparseProblem p = make_sparse(sh.S, sh.K, sh.N, dt, bias, sp, seed++);
            const std::vector<double> want = read(run_sparse_cpu(p, cpu_par()).data(), p.S * p.N, dt);
            for (const SparseForm& form : kSparseForms) {
              if (path == hc::SparsePath::dense && (form.warps || form.cluster)) continue;
              runner.set_sparse_form(form.warps, form.cluster);
              for (size_t off : {size_t(0), size_t(1)}) {
                if (off && (path != hc::SparsePath::sparse || sh.K == 0)) continue;
                const std::vector<double> got = read(run_sparse_cuda(p, path, runner, off).data(), p.S * p.N, dt);
                const double err = rel_err(got, want, 1.0);
                (dt == DType::f32 ? e32 : e16) = std::max(dt == DType::f32 ? e32 : e16, err);
                std::string extra = std::string(" CUDA ") + hc::sparse_path_name(path) + (off ? " misaligned W" : "");
                if (path == hc::SparsePath::sparse) {
                  hubmoe::SparseLinearArgs a = p.args();
                  extra += " (" + runner.sparse_form(a) + ")";
                }
                t.check_err(p.name(extra.c_str()), err, dt == DType::f32 ? 1e-5 : 1e-3);
                if (path == hc::SparsePath::sparse && !off) {
                  // No state is left behind between launches: a second launch gives the same bytes.
                  const std::vector<double> again = read(run_sparse_cuda(p, path, runner, off).data(), p.S * p.N, dt);
                  t.check_err(p.name((extra + ", launched again").c_str()), again == got ? 0.0 : 1.0, 0.5);
                }
              }
            }
            runner.set_sparse_form(-1, 0);
          }
}

// Decode (S = 1) at Jamba-v0.1's layer sizes, fp16: the sparse path at 0 / 40 / 50 / 70 % pruned inputs against a
// dense cuBLAS GEMM (what ONNX MatMul runs) of the same layer.
void sparse_timing() {
  std::string why;
  const hc::Cublas* cb = hc::load_cublas(&why);
  if (!cb) {
    std::printf("SparseLinear timing skipped: %s\n", why.c_str());
    return;
  }
  hc::Cublas::Handle h = nullptr;
  cb->create(&h);
  hc::SparseLinearRunner runner;
  struct Layer {
    const char* name;
    int64_t K, N;
  };
  const Layer layers[] = {{"mamba in_proj", 4096, 16384}, {"mamba out_proj", 8192, 4096},
                          {"mlp gate or up", 4096, 14336}, {"mlp down", 14336, 4096}, {"attention q or o", 4096, 4096}};
  std::printf("SparseLinear decode (S = 1, fp16), µs per call; dense = cuBLAS GemmEx on the unpruned input:\n");
  std::printf("  %-18s %7s %7s | %9s %9s %9s %9s %9s | %s\n", "layer", "K", "N", "dense", "sparse 0%", "40%", "50%",
              "70%", "speed-up at 40 / 50 %");
  for (const Layer& l : layers) {
    SparseProblem p = make_sparse(1, l.K, l.N, DType::f16, false, -1.0, 42);
    Dev x = dev(p.x), w = dev(p.W), y(static_cast<size_t>(l.N) * 2);
    const float one = 1.f, zero = 0.f;
    const double dense = time_us(
        [&] {
          cb->gemm_ex(h, hc::kCublasOpN, hc::kCublasOpN, static_cast<int>(l.N), 1, static_cast<int>(l.K), &one, w.p,
                      CUDA_R_16F, static_cast<int>(l.N), x.p, CUDA_R_16F, static_cast<int>(l.K), &zero, y.p, CUDA_R_16F,
                      static_cast<int>(l.N), hc::kCublasCompute32F, hc::kCublasGemmDefault);
        },
        20, 200, nullptr);
    double tt[4];
    const double sps[4] = {-1.0, 0.4, 0.5, 0.7};
    for (int i = 0; i < 4; ++i) {
      p.threshold = sps[i] < 0 ? -1.f : sparse_threshold_for(p, sps[i]);
      hubmoe::SparseLinearArgs a = p.args();
      a.x = x.p, a.W = w.p, a.bias = nullptr, a.y = y.p;
      Dev ws(runner.workspace_bytes(a, hc::SparsePath::sparse));
      tt[i] = time_us([&] { runner.run(a, ws.p, ws.bytes, nullptr, hc::SparsePath::sparse); }, 20, 200, nullptr);
    }
    hubmoe::SparseLinearArgs a = p.args();
    a.W = w.p;
    std::printf("  %-18s %7lld %7lld | %9.1f %9.1f %9.1f %9.1f %9.1f | %.2fx / %.2fx (dense %.2f TB/s) [%s]\n", l.name,
                (long long)l.K, (long long)l.N, dense, tt[0], tt[1], tt[2], tt[3], dense / tt[1], dense / tt[2],
                static_cast<double>(l.K * l.N * 2) / dense * 1e-6, runner.sparse_form(a).c_str());
  }
  // Every form at 0 and 50 %: the split form against cluster sizes 2…16 with 8 and 16 warps per block.
  std::printf("SparseLinear decode forms (S = 1, fp16), µs per call at 0 %% / 50 %% pruned:\n");
  for (const Layer& l : layers) {
    SparseProblem p = make_sparse(1, l.K, l.N, DType::f16, false, -1.0, 42);
    Dev x = dev(p.x), w = dev(p.W), y(static_cast<size_t>(l.N) * 2);
    std::printf("  %-18s", l.name);
    const SparseForm forms[] = {{0, 0}, {8, 2}, {8, 4}, {8, 8}, {8, 16}, {16, 2}, {16, 4}, {16, 8}, {16, 16}};
    for (const SparseForm& f : forms) {
      runner.set_sparse_form(f.warps, f.cluster);
      double tt[2];
      for (int i = 0; i < 2; ++i) {
        p.threshold = i == 0 ? -1.f : sparse_threshold_for(p, 0.5);
        hubmoe::SparseLinearArgs a = p.args();
        a.x = x.p, a.W = w.p, a.bias = nullptr, a.y = y.p;
        Dev ws(runner.workspace_bytes(a, hc::SparsePath::sparse));
        tt[i] = time_us([&] { runner.run(a, ws.p, ws.bytes, nullptr, hc::SparsePath::sparse); }, 20, 200, nullptr);
      }
      if (f.warps) std::printf(" | w%d c%-2d %5.1f/%5.1f", f.warps, f.cluster, tt[0], tt[1]);
      else std::printf(" | split %5.1f/%5.1f", tt[0], tt[1]);
    }
    std::printf("\n");
  }
  runner.set_sparse_form(-1, 0);
  cb->destroy(h);
}

}  // namespace
