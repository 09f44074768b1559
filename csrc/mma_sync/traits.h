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

// gen-1 mma.sync kernels: one quantization shape for every arch and variant (128-row Q tiles,
// 16-row warp tiles for the PER_WARP / PER_THREAD Q scales, 64 keys). The kernels' own warp
// height may be larger (sm_90a: 32-row warps, two m16 tiles each; attn_kernel.cuh): such a warp
// reads one Q scale per 16-row tile, so these numbers, and the reference, stay as they are.
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
