// NextToken: problems with planted ties, NaN, −∞ rows and larger padded entries, a reference written from the
// definition, and the CPU kernel's checks (included by test_cpu.cc; test_ort.cc and test_cuda.cu use the problems).
#pragma once

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../src/next_token.h"
#include "test_util.h"

namespace testutil {

struct NextTokenProblem {
  DType dtype = DType::f32;
  int64_t B = 0, T = 0, V = 0, vocab = 0;
  Buf logits;  // [B, T, V]
  hubmoe::NextTokenArgs args(int64_t* next) const {
    hubmoe::NextTokenArgs a;
    a.B = B, a.T = T, a.V = V, a.vocab = vocab, a.dtype = dtype, a.logits = logits.data(), a.next = next;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[160];
    std::snprintf(b, sizeof b, "NextToken %s B=%lld T=%lld V=%lld vocab=%lld%s", hubmoe::dtype_name(dtype),
                  (long long)B, (long long)T, (long long)V, (long long)vocab, extra);
    return b;
  }
};

// Random logits, then per row: row 0 a tie for the maximum (two indices, the later one first in memory order of a
// strided walk), row 1 NaNs around the maximum, row 2 (when B > 2) all −∞ but one NaN (answer 0), and everywhere a
// larger value in the padding past `vocab` and at earlier positions (both must be ignored).
inline NextTokenProblem make_next_token(int64_t B, int64_t T, int64_t V, int64_t vocab, DType t, uint64_t seed) {
  Rng r(seed);
  std::vector<double> v = r.vec(static_cast<size_t>(B * T * V), -8.0, 8.0);
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t b = 0; b < B; ++b) {
    double* last = v.data() + (b * T + T - 1) * V;
    for (int64_t p = 0; p + 1 < T; ++p) v[(b * T + p) * V + (b % vocab)] = 100.0;
    for (int64_t i = vocab; i < V; ++i) last[i] = 50.0 + static_cast<double>(i);
    if (b == 0 && vocab > 1) {
      const int64_t hi = vocab - 1, lo = vocab / 3;
      last[hi] = last[lo] = 20.0;
    }
    if (b == 1 && vocab > 2) {
      last[0] = nan;
      last[vocab / 2] = 30.0;
      last[vocab - 1] = nan;
    }
    if (b == 2) {
      for (int64_t i = 0; i < vocab; ++i) last[i] = -inf;
      last[vocab - 1] = nan;
    }
  }
  NextTokenProblem p;
  p.dtype = t, p.B = B, p.T = T, p.V = V, p.vocab = vocab;
  p.logits = make_buf(v, t);
  return p;
}

// From the definition: the lowest index among those holding the maximum of the candidates (values > −∞, not NaN).
inline std::vector<int64_t> next_token_ref(const NextTokenProblem& p) {
  std::vector<int64_t> out(static_cast<size_t>(p.B), 0);
  for (int64_t b = 0; b < p.B; ++b) {
    const double* last = p.logits.vals.data() + (b * p.T + p.T - 1) * p.V;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < p.vocab; ++i)
      if (!std::isnan(last[i])) mx = std::max(mx, last[i]);
    if (mx == -std::numeric_limits<double>::infinity()) continue;
    for (int64_t i = 0; i < p.vocab; ++i)
      if (last[i] == mx) {
        out[b] = i;
        break;
      }
  }
  return out;
}

struct NextTokenShape {
  int64_t B, T, V, vocab;
};
constexpr NextTokenShape kNextTokenShapes[] = {{1, 1, 5, 5}, {3, 2, 37, 30}, {4, 3, 1100, 1024}, {2, 1, 4096, 4093},
                                               {1, 1, 1, 1}, {0, 1, 8, 8}};

inline void test_next_token(Tally& t) {
  uint64_t seed = 7100;
  for (DType dt : {DType::f32, DType::f16})
    for (const NextTokenShape& s : kNextTokenShapes) {
      NextTokenProblem p = make_next_token(s.B, s.T, s.V, s.vocab, dt, seed++);
      std::vector<int64_t> got(static_cast<size_t>(p.B), -1);
      hubmoe::next_token_cpu(p.args(got.data()));
      t.check(got == next_token_ref(p), p.name(" CPU"), got == next_token_ref(p) ? 0 : 1, 0);
    }
  const int64_t dims[] = {2, 3, 10};
  hubmoe::NextTokenArgs a;
  auto throws = [&](const int64_t* d, int rank, int64_t vocab, const char* needle) {
    std::string msg;
    try {
      hubmoe::next_token_check(d, rank, vocab, a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    t.check(msg.find(needle) != std::string::npos, std::string("NextToken error: ") + needle, msg.empty() ? 1 : 0, 0);
  };
  throws(dims, 2, 5, "must be [batch, sequence, vocab]");
  const int64_t none[] = {2, 0, 10};
  throws(none, 3, 5, "has no positions");
  throws(dims, 3, 0, "attribute 'vocab' is 0");
  throws(dims, 3, 11, "attribute 'vocab' is 11");
}

}  // namespace testutil
