// Score masking of an m16 tile of mma.sync accumulators (both mma_sync kernels).
#pragma once
#include "common/params.h"

namespace cs {

// -inf at the scores of one m16 x (8*NS) tile (this thread's rows row0 + g and row0 + g + 8,
// columns k0 + 8j + 2t, +1) whose key is past Lk or, causal, after its row (top-left aligned).
template <int NS>
__device__ __forceinline__ void mask_tile(float (&s)[NS][4], const AttnParams& p, int row0, int k0, int g, int t) {
#pragma unroll
  for (int j = 0; j < NS; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = row0 + g + (i >> 1) * 8;
      const int col = k0 + j * 8 + 2 * t + (i & 1);
      if (col >= p.Lk || (p.causal && col > row)) s[j][i] = -INFINITY;
    }
}

}  // namespace cs
