// StaticAttentionMask: left-padded masks, prefill and decode positions, a reference from the definition, and the
// CPU kernel's checks (included by test_cpu.cc; test_ort.cc and test_cuda.cu use the problems and the reference).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "../src/static_attention_mask.h"
#include "test_util.h"

namespace testutil {

struct StaticMaskProblem {
  int64_t B = 0, S = 0, T = 0, groups = 1;
  std::vector<int64_t> mask;      // [B, S]
  std::vector<int64_t> position;  // [T]
  hubmoe::StaticMaskArgs args(float* bias, bool* is_new, int64_t* source) const {
    hubmoe::StaticMaskArgs a;
    a.B = B, a.S = S, a.T = T, a.groups = groups, a.mask = mask.data(), a.position = position.data();
    a.bias = bias, a.is_new = is_new, a.source = source;
    return a;
  }
  std::string name(const char* extra = "") const {
    char b[160];
    std::snprintf(b, sizeof b, "StaticAttentionMask B=%lld S=%lld T=%lld first=%lld groups=%lld%s", (long long)B,
                  (long long)S, (long long)T, (long long)position[0], (long long)groups, extra);
    return b;
  }
};

// Row b is left-padded by b·3 slots (mod S) over the first `filled` slots, slots past them are 0 (not written yet)
// except at the positions this step writes; some mask entries are 2 (any non-zero value counts).
inline StaticMaskProblem make_static_mask(int64_t B, int64_t S, int64_t T, int64_t first, int64_t groups) {
  StaticMaskProblem p;
  p.B = B, p.S = S, p.T = T, p.groups = groups;
  p.mask.assign(static_cast<size_t>(B * S), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < std::min(S, first + T); ++s) p.mask[b * S + s] = s >= (b * 3) % (first + 1) ? (s % 7 == 3 ? 2 : 1) : 0;
  for (int64_t i = 0; i < T; ++i) p.position.push_back(first + i);
  return p;
}

struct StaticMaskWant {
  std::vector<float> bias;
  std::vector<uint8_t> is_new;
  std::vector<int64_t> source;
};

// From the definition (../src/static_attention_mask.h), with the ONNX nodes' arithmetic: slots are 0…S−1, source
// is max(min(s − first, last − first), 0).
inline StaticMaskWant static_mask_ref(const StaticMaskProblem& p) {
  StaticMaskWant w;
  const int64_t first = p.position.front(), last = p.position.back();
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t g = 0; g < p.groups; ++g)
      for (int64_t i = 0; i < p.T; ++i)
        for (int64_t s = 0; s < p.S; ++s)
          w.bias.push_back(p.mask[b * p.S + s] != 0 && s <= p.position[i] ? 0.f : -3.4028234663852886e38f);
  for (int64_t s = 0; s < p.S; ++s) {
    w.is_new.push_back(s >= first && s <= last ? 1 : 0);
    w.source.push_back(std::max<int64_t>(std::min(s - first, last - first), 0));
  }
  return w;
}

struct StaticMaskShape {
  int64_t B, S, T, first, groups;
};
// Prefill from an empty window, decode steps (T = 1) in the middle and at the window's last slot, a multi-token
// step after a prefix, one group and Jamba's 4, batch 1 and 3; S = 1.
constexpr StaticMaskShape kStaticMaskShapes[] = {{2, 16, 16, 0, 4}, {3, 16, 1, 9, 4}, {1, 16, 1, 15, 1},
                                                 {2, 40, 5, 20, 2}, {1, 1, 1, 0, 1},  {3, 300, 1, 123, 4}};

inline void test_static_mask(Tally& t) {
  for (const StaticMaskShape& s : kStaticMaskShapes) {
    StaticMaskProblem p = make_static_mask(s.B, s.S, s.T, s.first, s.groups);
    const StaticMaskWant want = static_mask_ref(p);
    std::vector<float> bias(want.bias.size(), 1.f);
    std::vector<uint8_t> is_new(static_cast<size_t>(p.S), 7);
    std::vector<int64_t> source(static_cast<size_t>(p.S), -5);
    hubmoe::static_mask_cpu(p.args(bias.data(), reinterpret_cast<bool*>(is_new.data()), source.data()));
    const bool ok = bias == want.bias && is_new == want.is_new && source == want.source;
    t.check(ok, p.name(" CPU"), ok ? 0 : 1, 0);
    std::vector<float> only(want.bias.size(), 1.f);  // optional outputs absent
    hubmoe::static_mask_cpu(p.args(only.data(), nullptr, nullptr));
    t.check(only == want.bias, p.name(" CPU, bias only"), only == want.bias ? 0 : 1, 0);
  }
  hubmoe::StaticMaskArgs a;
  auto throws = [&](std::vector<int64_t> md, std::vector<int64_t> pd, const char* needle) {
    std::string msg;
    try {
      hubmoe::static_mask_check(md.data(), static_cast<int>(md.size()), pd.data(), static_cast<int>(pd.size()), a);
    } catch (const hubmoe::OpError& e) {
      msg = e.what();
    }
    t.check(msg.find(needle) != std::string::npos, std::string("StaticAttentionMask error: ") + needle, msg.empty() ? 1 : 0, 0);
  };
  throws({2, 3, 4}, {1}, "'attention_mask' must be [batch, slots], got [2, 3, 4]");
  throws({2, 8}, {}, "'cache_position' must be [positions]");
  throws({2, 8}, {0}, "with at least one position, got [0]");
}

}  // namespace testutil
