// ai.hubmoe::NextToken — the greedy choice at each row's last position (see ../README.md):
//
//   next[b] = the lowest i < vocab with logits[b, T − 1, i] = max_{j < vocab} logits[b, T − 1, j]
//
// Only values greater than −∞ are candidates (NaN never is); a row without any gives 0. This is the choice the
// runtime makes on the host (runtime/sampling.ts, argmax), so a decode step needs to copy B token ids instead of
// B × vocab logits.
#pragma once

#include <cstdint>

#include "common.h"

namespace hubmoe {

struct NextTokenArgs {
  int64_t B = 0, T = 0, V = 0;  // rows, positions, padded vocabulary (the logits' last dim)
  int64_t vocab = 0;            // candidates: the first `vocab` entries (1 ≤ vocab ≤ V)
  DType dtype = DType::f32;
  const void* logits = nullptr;  // [B, T, V]
  int64_t* next = nullptr;       // [B]
};

// Validates logits' shape ([B, T, V] with T ≥ 1) and the vocab attribute, and fills B, T, V, vocab.
void next_token_check(const int64_t* dims, int rank, int64_t vocab, NextTokenArgs& args);

void next_token_cpu(const NextTokenArgs& args);

namespace cuda {
// One block per row; no host synchronisation.
void next_token(const NextTokenArgs& args, void* stream);
}  // namespace cuda

}  // namespace hubmoe
