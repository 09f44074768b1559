// The epilogue of both mma.sync kernels: normalise, undo the V scale and V smoothing, store.
#pragma once
#include "common/types.h"
#include "common/params.h"
#include "mma_sync/softmax.cuh"

namespace cs::mma_sync {

// A warp's MT m16 output tiles (tile m: rows row0 + 16m + g and + 8; this thread's columns 2t,
// 2t+1 of each n8 tile): O / l (times V's per-channel scale and 1/PS for 8-bit P·V), plus V's
// per-channel mean for INT8 P·V (V smoothing; exact: each row of P / l sums to 1), stored in the
// output's dtype and layout, and each row's lse. l: this thread's partial sums of P·PS per row
// half (the four lanes of a row are summed here, so every lane must call this, in or out of
// range); m: the rows' running max in base-2 units. vscale: this (batch, kv head)'s per-channel
// scales followed by its V means (AttnParams::v_scale), or null. Column-outer: each column's
// scale and mean are loaded once and die after the MT*2 rows that use them.
template <int D, PV MODE, int MT>
__device__ __forceinline__ void store_tile(const AttnParams& p, int b, int h, int row0, int g, int t,
                                           const float (&o)[MT][D / 8][4], const float (&l)[MT][2],
                                           const float (&m)[MT][2], const float* vscale) {
  constexpr float PS = pv_p_scale(MODE);
  float inv_l[MT][2];
  bool seen[MT][2];
  char* orow[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float sum = quad_sum(l[mt][hf]) * (1.f / PS);
      const int row = row0 + mt * 16 + g + hf * 8;
      seen[mt][hf] = sum > 0.f;  // a row that saw no key is 0, mean or not (as the reference)
      inv_l[mt][hf] = seen[mt][hf] ? 1.f / sum : 0.f;
      orow[mt][hf] = row < p.Lq ? reinterpret_cast<char*>(p.o) +
                                      ((int64_t)b * p.o_sb + (int64_t)h * p.o_sh + (int64_t)row * p.o_sn) * 2
                                : nullptr;
      if (p.lse != nullptr && t == 0 && row < p.Lq) {
        const int64_t idx = (int64_t)(b * p.Hq + h) * p.Lq + row;
        float lse = seen[mt][hf] ? (m[mt][hf] + log2f(sum)) * 0.69314718055994531f : -INFINITY;
        if (p.lse_corr != nullptr) lse += p.lse_corr[idx];
        p.lse[idx] = lse;
      }
    }
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = n * 8 + 2 * t;
    float s0 = 1.f, s1 = 1.f, mu0 = 0.f, mu1 = 0.f;
    if constexpr (pv_is_8bit(MODE)) {
      s0 = vscale[d] * (1.f / PS);
      s1 = vscale[d + 1] * (1.f / PS);
      if constexpr (MODE == PV::INT8) { mu0 = vscale[D + d]; mu1 = vscale[D + d + 1]; }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        if (orow[mt][hf] == nullptr) continue;
        float x0 = o[mt][n][2 * hf] * s0 * inv_l[mt][hf], x1 = o[mt][n][2 * hf + 1] * s1 * inv_l[mt][hf];
        if constexpr (MODE == PV::INT8) {
          if (seen[mt][hf]) { x0 += mu0; x1 += mu1; }
        }
        char* dst = orow[mt][hf] + d * 2;
        if (p.out_bf16) *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x0, x1);
        else *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(x0, x1);
      }
  }
}

}  // namespace cs::mma_sync
