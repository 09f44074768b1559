// Padding and scale counts of the quantized operands, from a family's TileShape (types.h).
// PER_THREAD follows the m16n8k32 fragment (8 Q groups per warp tile by row%8, 4 K groups per K
// block by (row%8)/2); PER_WARP one Q scale per warp tile and one K scale per block; PER_BLOCK
// one per Q tile / K block.
#pragma once
#include "common/types.h"

namespace cs {

constexpr int q_scale_rows(Gran g, TileShape t) { return g == Gran::PER_BLOCK ? t.blk_q : t.warp_q; }
constexpr int q_scale_groups(Gran g) { return g == Gran::PER_THREAD ? 8 : 1; }
constexpr int k_scale_groups(Gran g) { return g == Gran::PER_THREAD ? 4 : 1; }
constexpr int pad_q(int lq, TileShape t) { return ceil_div(lq, t.blk_q) * t.blk_q; }
constexpr int pad_k(int lk, TileShape t) { return ceil_div(lk, t.blk_k) * t.blk_k; }
constexpr int q_scales_per_head(Gran g, int lq, TileShape t) {
  return pad_q(lq, t) / q_scale_rows(g, t) * q_scale_groups(g);
}
constexpr int k_scales_per_head(Gran g, int lk, TileShape t) { return pad_k(lk, t) / t.blk_k * k_scale_groups(g); }

}  // namespace cs
