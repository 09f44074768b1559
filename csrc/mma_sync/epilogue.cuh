// The attention kernels' epilogue, shared by attn_kernel.cuh and attn_w32.cuh.
#pragma once
#include "common.cuh"
#include "params.h"

namespace cs {

// One row half of an m16 output tile (rows g + 8*hf of the tile, this thread's columns 2t, 2t+1
// of each n8 tile): O / l (times V's per-channel scale and 1/PS for 8-bit P·V), stored in the
// output's dtype and layout, and the row's lse. l: this thread's partial sum of P·PS for the row
// (the four lanes of the row are summed here, so every lane must call this, in or out of range);
// m: the row's running max in base-2 units.
template <int D, PV MODE>
__device__ __forceinline__ void store_row_half(const AttnParams& p, int b, int h, int row, int t, int hf,
                                               const float (&o)[D / 8][4], float l, float m, const float* vscale) {
  constexpr float PS = pv_p_scale(MODE);
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  l *= 1.f / PS;
  if (row >= p.Lq) return;
  const float inv_l = l > 0.f ? 1.f / l : 0.f;
  char* orow = reinterpret_cast<char*>(p.o) + ((int64_t)b * p.o_sb + (int64_t)h * p.o_sh + (int64_t)row * p.o_sn) * 2;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = n * 8 + 2 * t;
    float x0 = o[n][2 * hf], x1 = o[n][2 * hf + 1];
    if constexpr (pv_is_8bit(MODE)) {
      x0 *= vscale[d] * (1.f / PS);
      x1 *= vscale[d + 1] * (1.f / PS);
    }
    x0 *= inv_l; x1 *= inv_l;
    if (p.out_bf16) *reinterpret_cast<__nv_bfloat162*>(orow + d * 2) = __floats2bfloat162_rn(x0, x1);
    else *reinterpret_cast<__half2*>(orow + d * 2) = __floats2half2_rn(x0, x1);
  }
  if (p.lse != nullptr && t == 0) {
    const int64_t idx = (int64_t)(b * p.Hq + h) * p.Lq + row;
    float lse = l > 0.f ? (m + log2f(l)) * 0.69314718055994531f : -INFINITY;
    if (p.lse_corr != nullptr) lse += p.lse_corr[idx];
    p.lse[idx] = lse;
  }
}

}  // namespace cs
