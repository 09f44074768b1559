// Tile sizes per variant and arch: the one place they are written down. The C ABI's
// cs_query_tiles() reports them, so Python (and the reference's quantization groups) never
// repeats them as literals.
#pragma once
#include "common.cuh"

namespace cs {

struct TileShape {
  int blk_q;   // query rows per CTA
  int warp_q;  // query rows per warp (two m16 tiles of mma.sync)
  int blk_k;   // kv tokens per main-loop step
};

// gen-1 mma.sync kernels: one shape for every arch and variant (8 warps x 16 rows, 64 keys).
// warp_q=32 (4 warps) spilled at D=128: O (128 regs) + S (64) + fragments went past 255.
__host__ __device__ constexpr TileShape tiles_for(int /*head_dim*/, PV /*mode*/, int /*arch*/) {
  return TileShape{/*blk_q=*/128, /*warp_q=*/16, /*blk_k=*/64};
}
constexpr TileShape kTiles = tiles_for(128, PV::FP16, 80);

// Scales per head: PER_THREAD follows the m16n8k32 fragment (8 Q groups per warp tile by
// row%8, 4 K groups per K block by (row%8)/2); PER_WARP one Q scale per warp tile and one K
// scale per block; PER_BLOCK one per CTA tile / K block.
constexpr int q_scale_rows(Gran g) { return g == Gran::PER_BLOCK ? kTiles.blk_q : kTiles.warp_q; }
constexpr int q_scale_groups(Gran g) { return g == Gran::PER_THREAD ? 8 : 1; }
constexpr int k_scale_groups(Gran g) { return g == Gran::PER_THREAD ? 4 : 1; }
inline int pad_q(int lq) { return ceil_div(lq, kTiles.blk_q) * kTiles.blk_q; }
inline int pad_k(int lk) { return ceil_div(lk, kTiles.blk_k) * kTiles.blk_k; }
inline int q_scales_per_head(Gran g, int lq) { return pad_q(lq) / q_scale_rows(g) * q_scale_groups(g); }
inline int k_scales_per_head(Gran g, int lk) { return pad_k(lk) / kTiles.blk_k * k_scale_groups(g); }

}  // namespace cs
