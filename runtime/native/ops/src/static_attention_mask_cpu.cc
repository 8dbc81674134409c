#include <algorithm>
#include <string>

#include "static_attention_mask.h"

namespace hubmoe {

void static_mask_check(const int64_t* md, int mr, const int64_t* pd, int pr, StaticMaskArgs& a) {
  if (mr != 2) throw OpError("StaticAttentionMask: input 'attention_mask' must be [batch, slots], got " + dims_str(md, mr));
  if (pr != 1 || pd[0] < 1)
    throw OpError("StaticAttentionMask: input 'cache_position' must be [positions] with at least one position, got " + dims_str(pd, pr));
  a.B = md[0], a.S = md[1], a.T = pd[0];
}

void static_mask_cpu(const StaticMaskArgs& a) {
  const int64_t first = a.position[0], last = a.position[a.T - 1];
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t r = 0; r < a.groups * a.T; ++r) {
      const int64_t q = a.position[r % a.T];
      float* row = a.bias + (b * a.groups * a.T + r) * a.S;
      for (int64_t s = 0; s < a.S; ++s) row[s] = a.mask[b * a.S + s] != 0 && s <= q ? 0.f : kMaskedBias;
    }
  for (int64_t s = 0; s < a.S; ++s) {
    if (a.is_new) a.is_new[s] = s >= first && s <= last;
    if (a.source) a.source[s] = std::min(std::max<int64_t>(s - first, 0), std::max<int64_t>(last - first, 0));
  }
}

}  // namespace hubmoe
