#include <cmath>
#include <limits>
#include <string>

#include "next_token.h"

namespace hubmoe {

void next_token_check(const int64_t* d, int rank, int64_t vocab, NextTokenArgs& a) {
  if (rank != 3) throw OpError("NextToken: input 'logits' must be [batch, sequence, vocab], got " + dims_str(d, rank));
  if (d[1] < 1) throw OpError("NextToken: input 'logits' has no positions: " + dims_str(d, rank));
  if (vocab < 1 || vocab > d[2])
    throw OpError("NextToken: attribute 'vocab' is " + std::to_string(vocab) + ", must be between 1 and the logits' last dim (" +
                  std::to_string(d[2]) + ")");
  a.B = d[0], a.T = d[1], a.V = d[2], a.vocab = vocab;
}

namespace {

template <typename T>
void impl(const NextTokenArgs& a) {
  const T* l = static_cast<const T*>(a.logits);
  for (int64_t b = 0; b < a.B; ++b) {
    const T* row = l + (b * a.T + a.T - 1) * a.V;
    int64_t best = 0;
    float best_v = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < a.vocab; ++i) {
      const float v = to_float(row[i]);
      if (v > best_v) best_v = v, best = i;
    }
    a.next[b] = best;
  }
}

}  // namespace

void next_token_cpu(const NextTokenArgs& a) {
  if (a.dtype == DType::f16) impl<half_t>(a);
  else impl<float>(a);
}

}  // namespace hubmoe
