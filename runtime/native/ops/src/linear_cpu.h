// CPU building blocks shared by the ai.hubmoe kernels: T → fp32 row loads, an output-major linear layer, and an
// input-major one that skips the weight rows of zero inputs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common.h"

namespace hubmoe {

template <typename T>
inline void load_row(const T* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// out[m, r] = rows_in[m] · W[r] (+ bias[r]) for m < M, r < R; W is [R, K] row-major. Parallel over rows of W,
// tokens tiled so that a tile of inputs stays in cache while the rows stream past.
template <typename T>
inline void linear_output_major(const float* in, int64_t M, int64_t K, const T* W, const T* bias, int64_t R, float* out,
            const Parallel& par) {
  constexpr int64_t kTile = 32;
  const size_t grain = static_cast<size_t>(std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K * std::min(M, kTile))));
  par.for_range(static_cast<size_t>(R), grain, [&](size_t r0, size_t r1) {
    std::vector<float> row(static_cast<size_t>(K));
    for (int64_t m0 = 0; m0 < M; m0 += kTile) {
      const int64_t m1 = std::min(M, m0 + kTile);
      for (size_t r = r0; r < r1; ++r) {
        const float* wr;
        if constexpr (std::is_same<T, float>::value) {
          wr = W + static_cast<int64_t>(r) * K;
        } else {
          load_row(W + static_cast<int64_t>(r) * K, K, row.data());
          wr = row.data();
        }
        const float b = bias ? to_float(bias[r]) : 0.f;
        int64_t m = m0;
        for (; m + 4 <= m1; m += 4) {  // four tokens per pass over the row: one weight load per four FMAs
          const float *x0 = in + m * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
          float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
          for (int64_t k = 0; k < K; ++k) {
            const float w = wr[k];
            s0 += x0[k] * w;
            s1 += x1[k] * w;
            s2 += x2[k] * w;
            s3 += x3[k] * w;
          }
          float* o = out + m * R + static_cast<int64_t>(r);
          o[0] = s0 + b;
          o[R] = s1 + b;
          o[2 * R] = s2 + b;
          o[3 * R] = s3 + b;
        }
        for (; m < m1; ++m) out[m * R + static_cast<int64_t>(r)] = dot(in + m * K, wr, K) + b;
      }
    }
  });
}

// Input-major: out[m, r] = Σ_k in[m, k]·W[k, r] (+ bias[r]) for m < M, r < R; W is [K, R] row-major, so input
// element k multiplies one contiguous weight row. Tokens are taken in tiles of kImTok; a row k whose input is
// exactly 0 for every token of the tile is skipped (SCAP-pruned inputs). Parallel over tiles of kImCols output
// columns; float16 weights are converted one row slice at a time.
inline constexpr int64_t kImCols = 256;
inline constexpr int64_t kImTok = 8;

template <typename T>
inline void linear_input_major(const float* in, int64_t M, int64_t K, const T* W, const T* bias, int64_t R, float* out,
                        const Parallel& par) {
  // Per token tile, the rows some token of the tile needs (shared by every column tile).
  const int64_t tiles_m = (M + kImTok - 1) / kImTok;
  std::vector<int64_t> rows_off(static_cast<size_t>(tiles_m + 1), 0);
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(K));
  for (int64_t t = 0; t < tiles_m; ++t) {
    const int64_t m0 = t * kImTok, m1 = std::min(M, m0 + kImTok);
    for (int64_t k = 0; k < K; ++k) {
      bool any = false;
      for (int64_t m = m0; m < m1 && !any; ++m) any = in[m * K + k] != 0.f;  // NaN != 0: kept
      if (any) rows.push_back(k);
    }
    rows_off[t + 1] = static_cast<int64_t>(rows.size());
  }
  const int64_t tiles_c = (R + kImCols - 1) / kImCols;
  const size_t grain = static_cast<size_t>(
      std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kImCols * K * std::min(M, kImTok))));
  par.for_range(static_cast<size_t>(tiles_c), grain, [&](size_t t0, size_t t1) {
    float acc[kImTok][kImCols];
    float wrow[kImCols];
    for (size_t tc = t0; tc < t1; ++tc) {
      const int64_t c0 = static_cast<int64_t>(tc) * kImCols, nc = std::min(kImCols, R - c0);
      for (int64_t t = 0; t < tiles_m; ++t) {
        const int64_t m0 = t * kImTok, nm = std::min(M, m0 + kImTok) - m0;
        for (int64_t m = 0; m < nm; ++m)
          for (int64_t c = 0; c < nc; ++c) acc[m][c] = 0.f;
        for (int64_t i = rows_off[t]; i < rows_off[t + 1]; ++i) {
          const int64_t k = rows[i];
          const float* wr;
          if constexpr (std::is_same<T, float>::value) {
            wr = W + k * R + c0;
          } else {
            load_row(W + k * R + c0, nc, wrow);
            wr = wrow;
          }
          for (int64_t m = 0; m < nm; ++m) {
            const float v = in[(m0 + m) * K + k];
            float* ac = acc[m];
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) ac[c] += v * wr[c];
          }
        }
        for (int64_t m = 0; m < nm; ++m)
          for (int64_t c = 0; c < nc; ++c)
            out[(m0 + m) * R + c0 + c] = acc[m][c] + (bias ? to_float(bias[c0 + c]) : 0.f);
      }
    }
  });
}

}  // namespace hubmoe
