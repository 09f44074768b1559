// The mainloop of the 32-row-warp kernel (family w32): FP16 and INT8 P·V on sm_90 (NOTES.md v5).
//
// CTA: 128 query rows = 4 warps x 32 rows (two m16 tiles per warp share every ldmatrix'd K and V
// fragment: half the shared-memory reads per query row of the 16-row kernel), 64-key blocks, K and
// V double-buffered by cp.async one block ahead, one barrier per block, two CTAs per SM. The
// numerics are mainloop_w16.cuh's (same quantized inputs, same rounding points), so both are
// checked against the same reference. What keeps it at about 1000 instructions per warp and
// block (the first 32-row attempt, NOTES.md v4, issued 1600-1850):
//  - ldmatrix addresses are per-lane bases XORed with compile-time constants: with the swizzle
//    chunk ^= row%8 and 16-row fragment rows, the k-step index only flips address bits 5-7, so
//    each fragment costs one LOP3 and an immediate offset (buffers 256-byte aligned);
//  - the softmax works on the raw int32 scores: the row max is taken before scaling (the scale
//    is > 0) and scale and max subtraction are one FFMA feeding ex2;
//  - the masking code runs only for the last (partial or causal) blocks;
//  - FP16 P·V skips O's rescale when no row of the warp raised its max (most blocks after the
//    first few).
// It fits 255 registers at head dim 128 without spills only as compiled: INT8 at ptxas -O3, FP16
// at -O1 (csrc/configs.json "ptxas"); tests/test_sass.py fails if that changes.
#pragma once
#include <cfloat>
#include "common/amax.cuh"
#include <type_traits>
#include "common/types.h"
#include "common/params.h"
#include "common/memory.cuh"
#include "common/mma.cuh"
#include "common/convert.cuh"
#include "common/mask.cuh"
#include "mma_sync/traits.h"
#include "mma_sync/softmax.cuh"
#include "mma_sync/epilogue.cuh"

namespace cs::mma_sync {

// Per-lane byte offset of an ldmatrix.x4 fragment in a swizzled tile (swz in memory.cuh) whose
// 16-row fragment starts at row 0 and chunk 0: rows (lane&7) + 8*rbit, chunk cbit. Fragment
// (row0 + 16i, chunk 2k + cbit) is then at (base + off) ^ (k << 5) + 16 i * ROW, for 128-byte
// and longer rows (chunk ^= row%8) and 64-byte rows (chunk ^= (row/2)%4) alike: row0 is a
// multiple of 16 and 2k only touches the chunk's bits above bit 0.
template <int ROW>
__device__ __forceinline__ uint32_t frag_off(int lane, int rbit, int cbit) {
  const int r = (lane & 7) + 8 * rbit;
  return static_cast<uint32_t>(swz<ROW / 16>(r, cbit));
}

template <int D, PV MODE>
__device__ __forceinline__ void w32_cta(const AttnParams& p) {
  using C = W32Cfg<D, MODE>;
  constexpr int MT = C::MT, NS = C::NS, NO = C::NO;
  constexpr float PS = pv_p_scale(MODE);
  constexpr float PS_LOG2 = MODE == PV::INT8 ? 7.99435343685885793f : 0.f;
  static_assert(MODE != PV::INT8 || PS == 255.f, "PS_LOG2 is log2(255)");
  extern __shared__ uint8_t smem_w32[];
  const uint32_t s0 = (smem_u32(smem_w32) + C::ALIGN - 1) & ~uint32_t(C::ALIGN - 1);
  const uint32_t sQ = s0, sK = s0 + C::Q_BYTES, sV = sK + 2 * C::K_BYTES, sQS = sV + 2 * C::V_BYTES;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;  // heavy (causal) tiles first
  const int h = blockIdx.y, b = blockIdx.z;
  const int bhk = b * p.Hkv + h / (p.Hq / p.Hkv);
  const int q0 = qb * C::BLK_Q, wq0 = q0 + warp * C::WARP_Q;

  const uint8_t* gQ = reinterpret_cast<const uint8_t*>(p.q8) + ((int64_t)(b * p.Hq + h) * p.Lq_pad + q0) * D;
  const uint8_t* gK = reinterpret_cast<const uint8_t*>(p.k8) + (int64_t)bhk * p.Lk_pad * D;
  const uint8_t* gV = reinterpret_cast<const uint8_t*>(p.v) + (int64_t)bhk * p.Lk_pad * D * (C::V8 ? 1 : 2);
  const float* kscale = p.k_scale + (int64_t)bhk * p.k_scales_per_head;
  const int kv_end = p.causal ? min(p.Lk, q0 + C::BLK_Q) : p.Lk;
  const int nkb = ceil_div(kv_end, C::BLK_K);

  auto load_kv = [&](int kb) {
    const uint32_t st = (kb & 1);
    load_tile_async<C::BLK_K, C::QK_ROW / 16, C::THREADS>(sK + st * C::K_BYTES, gK + (int64_t)kb * C::BLK_K * D, D, tid);
    if constexpr (C::V8)
      load_tile_async<C::V_ROWS, C::V_ROW / 16, C::THREADS>(sV + st * C::V_BYTES, gV + (int64_t)kb * C::BLK_K, p.Lk_pad, tid);
    else
      load_tile_async<C::V_ROWS, C::V_ROW / 16, C::THREADS>(sV + st * C::V_BYTES, gV + (int64_t)kb * C::BLK_K * D * 2, D * 2, tid);
  };
  load_tile_async<C::BLK_Q, C::QK_ROW / 16, C::THREADS>(sQ, gQ, D, tid);
  load_kv(0);
  cp_async_commit();

  // Per-lane fragment bases. Q (A of m16n8k32): rows (lane&7) + 8*((lane>>3)&1), chunk lane>>4.
  // K (B, two n8 tiles per x4): rows (lane&7) + 8*(lane>>4), chunk (lane>>3)&1.
  // V fp16 (B of m16n8k16 via .trans): token rows (lane&7) + 8*((lane>>3)&1), chunk lane>>4.
  // V^T 8-bit (B of m16n8k32): channel rows (lane&7) + 8*(lane>>4), chunk (lane>>3)&1.
  const uint32_t qa = sQ + warp * C::WARP_Q * C::QK_ROW + frag_off<C::QK_ROW>(lane, (lane >> 3) & 1, lane >> 4);
  const uint32_t ka = sK + frag_off<C::QK_ROW>(lane, lane >> 4, (lane >> 3) & 1);
  const uint32_t va = C::V8 ? sV + frag_off<C::V_ROW>(lane, lane >> 4, (lane >> 3) & 1)
                            : sV + frag_off<C::V_ROW>(lane, (lane >> 3) & 1, lane >> 4);

  // This thread's Q scale per m16 tile (the quantization warp tile is 16 rows), sm_scale*log2e
  // folded in, parked in shared memory (one slot per thread: read back by the same thread only).
#pragma unroll
  for (int m = 0; m < MT; ++m)
    st_shared_f32(sQS + (m * C::THREADS + tid) * 4,
                  p.q_scale[(int64_t)(b * p.Hq + h) * p.q_scales_per_head +
                            ((wq0 + m * 16) / p.q_scale_rows) * p.q_groups + (g % p.q_groups)] * p.sm_scale_log2);
  const int kgrp = t & (p.k_groups - 1);  // k_groups: 1 or 4

  float o[MT][NO][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) o[m][n][i] = 0.f;
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) { m_run[m][0] = m_run[m][1] = -INFINITY; l_run[m][0] = l_run[m][1] = 0.f; }

  // One block. MASK: the block may hold keys past Lk or (causal) after some row of the CTA; the
  // first loop below runs the blocks that need neither, without the masking code.
  auto step = [&](const int kb, auto mask_tag) {
    constexpr bool MASK = decltype(mask_tag)::value;
    // K(kb), V(kb) landed; every warp is done with block kb-1, whose stage the next loads reuse.
    cp_async_wait<0>();
    __syncthreads();
    if (kb + 1 < nkb) load_kv(kb + 1);
    cp_async_commit();
    const int k0 = kb * C::BLK_K;
    if (MASK && p.causal && k0 > wq0 + C::WARP_Q - 1) return;  // this warp's rows all precede the block
    const uint32_t st = kb & 1;
    const uint32_t kst = ka + st * C::K_BYTES, vst = va + st * C::V_BYTES;

    // ---- S = Q·Kᵀ, int32 started at the magic bias: one FADD converts it (convert.cuh) ----
    int sacc[MT][NS][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int j = 0; j < NS; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) sacc[m][j][i] = kMagicI;
#pragma unroll
    for (int kk = 0; kk < C::KQ; ++kk) {
      uint32_t qf[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) ldmatrix_x4(qf[m], (qa ^ (kk << 5)) + m * 16 * C::QK_ROW);
#pragma unroll
      for (int jp = 0; jp < NS / 2; ++jp) {
        uint32_t kf[4];
        ldmatrix_x4(kf, (kst ^ (kk << 5)) + jp * 16 * C::QK_ROW);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_s8s8(sacc[m][2 * jp], qf[m], kf[0], kf[1]);
          mma_s8s8(sacc[m][2 * jp + 1], qf[m], kf[2], kf[3]);
        }
      }
    }

    // ---- online softmax on the raw integer scores (exact in float: |S| < 2^22) ----
    float s[MT][NS][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int j = 0; j < NS; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) s[m][j][i] = magic_to_float(sacc[m][j][i]);
    if (MASK && ((k0 + C::BLK_K > p.Lk) || (p.causal && k0 + C::BLK_K - 1 > wq0))) {
#pragma unroll
      for (int m = 0; m < MT; ++m) mask_tile(s[m], p, wq0 + m * 16, k0, g, t);
    }
    const float ks = kscale[kb * p.k_groups + kgrp];
    float alpha[MT][2];
    bool rescale = false;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      // > 0, so max(raw) * f = max(raw * f). Floored at FLT_MIN: with tiny Q and K scales the
      // product can underflow to 0, and -inf * 0 (a masked score) would be NaN; at FLT_MIN every
      // score is ~0 either way (uniform attention, as the reference computes it). A NaN scale
      // (a NaN in Q or K, csrc/common/amax.cuh) stays NaN.
      const float f = fmax_nan(ld_shared_f32(sQS + (m * C::THREADS + tid) * 4) * ks, FLT_MIN);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) alpha[m][hf] = online_softmax(s[m], hf, f, PS_LOG2, m_run[m][hf], l_run[m][hf], rescale);
    }

    // ---- O += P·V ----
    if constexpr (MODE == PV::FP16) {
      if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int n = 0; n < NO; ++n) {
            o[m][n][0] *= alpha[m][0]; o[m][n][1] *= alpha[m][0];
            o[m][n][2] *= alpha[m][1]; o[m][n][3] *= alpha[m][1];
          }
      }
#pragma unroll
      for (int kk = 0; kk < NS / 2; ++kk) {
        uint32_t pa[MT][4];  // k16 step kk: S tiles 2kk (a0,a1) and 2kk+1 (a2,a3)
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          pa[m][0] = pack_half2(s[m][2 * kk][0], s[m][2 * kk][1]);
          pa[m][1] = pack_half2(s[m][2 * kk][2], s[m][2 * kk][3]);
          pa[m][2] = pack_half2(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
          pa[m][3] = pack_half2(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < NO / 2; ++dp) {
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, (vst ^ (dp << 5)) + kk * 16 * C::V_ROW);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            mma_f16_f32(o[m][2 * dp], pa[m], vf[0], vf[1]);
            mma_f16_f32(o[m][2 * dp + 1], pa[m], vf[2], vf[3]);
          }
        }
      }
    } else {
      // P*255 to u8 (k32 step kk: S tiles 4kk..4kk+3; V^T was stored token-permuted to match),
      // exact int32 P·V per block, added to O with O's rescale fused (one FFMA).
      uint32_t pa[MT][NS / 4][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int kk = 0; kk < NS / 4; ++kk)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int j = 4 * kk + (r >> 1) * 2, e = (r & 1) * 2;
            pa[m][kk][r] = pack_u8x4_rn(s[m][j][e], s[m][j][e + 1], s[m][j + 1][e], s[m][j + 1][e + 1]);
          }
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t vf[NS / 4][4];
#pragma unroll
        for (int kk = 0; kk < NS / 4; ++kk) ldmatrix_x4(vf[kk], (vst ^ (kk << 5)) + dp * 16 * C::V_ROW);
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            int c[4] = {kMagicI, kMagicI, kMagicI, kMagicI};
#pragma unroll
            for (int kk = 0; kk < NS / 4; ++kk) mma_u8s8(c, pa[m][kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
            float* od = o[m][2 * dp + e];
#pragma unroll
            for (int i = 0; i < 4; ++i) od[i] = fmaf(od[i], alpha[m][i >> 1], magic_to_float(c[i]));
          }
      }
    }
  };
  const int nfull = min(p.Lk / C::BLK_K, p.causal ? q0 / C::BLK_K : nkb);
  int kb = 0;
  for (; kb < nfull; ++kb) step(kb, std::false_type{});
  for (; kb < nkb; ++kb) step(kb, std::true_type{});

  // ---- epilogue ----
  const float* vscale = C::V8 ? p.v_scale + (int64_t)bhk * 2 * D : nullptr;  // then the V means
  store_tile<D, MODE, MT>(p, b, h, wq0, g, t, o, l_run, m_run, vscale);
}

}  // namespace cs::mma_sync
