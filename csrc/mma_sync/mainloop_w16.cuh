// The mainloop of the 16-row-warp kernel (family w16): INT8 Q·Kᵀ with mma.sync and one P·V mode
// per instantiation, on every arch.
//
// CTA: 64 or 128 query rows (traits.h w16_cta_q), warps of 16 rows (one m16 tile each); the KV
// sequence is walked in blocks of BLK_K=64, K and V double-buffered by cp.async, and Q·Kᵀ of the
// next block is issued before the softmax of the current one (where traits.h w16_pipelined). Q
// fragments are re-read from smem each k32 step. Scores are in base-2 units (sm_scale*log2e
// folded into the Q scale), exp2 on MUFU; int32 results convert to float through the mantissa
// (convert.cuh), not the quarter-rate I2F. Measurements: NOTES.md.
#pragma once
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

// Q·Kᵀ of one 64-key block into int32 accumulators started at C::ACC_INIT, so
// S converts to float with one exact FADD (and an IADD where ACC_INIT is 0), not an I2F.
template <class C>
__device__ __forceinline__ void qk_block(int (&sacc)[C::NS][4], uint32_t sQ, uint32_t sK, int warp, int lane) {
  constexpr int kAccInit = C::ACC_INIT;
#pragma unroll
  for (int j = 0; j < C::NS; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) sacc[j][i] = kAccInit;
#pragma unroll
  for (int kk = 0; kk < C::KQ; ++kk) {
    // Q fragments (A of m16n8k32) re-read from smem each step: keeping all of them in
    // registers (16 regs at D=128) does not fit beside two S tiles and O.
    uint32_t qf[4];
    {
      const int r = warp * C::WARP_Q + (lane & 7) + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(qf, sQ + swz<C::QK_CHUNKS>(r, kk * 2 + (lane >> 4)));
    }
#pragma unroll
    for (int jp = 0; jp < C::NS / 2; ++jp) {
      uint32_t kf[4];
      const int r = jp * 16 + (lane & 7) + (lane >> 4) * 8;
      ldmatrix_x4(kf, sK + swz<C::QK_CHUNKS>(r, kk * 2 + ((lane >> 3) & 1)));
      mma_s8s8(sacc[2 * jp], qf, kf[0], kf[1]);
      mma_s8s8(sacc[2 * jp + 1], qf, kf[2], kf[3]);
    }
  }
}

template <int D, PV MODE, int CTA_Q>
__device__ __forceinline__ void w16_cta(const AttnParams& p) {
  using C = W16Cfg<D, MODE, CTA_Q>;
  constexpr int NS = C::NS, NO = C::NO;
  constexpr int kAccInit = C::ACC_INIT, kAccBias = kMagicI - kAccInit;
  // 8-bit P: the static P scale is folded into the exponent (P·PS = exp2(s - m + log2 PS)), so
  // l sums P·PS and the epilogue divides by PS once.
  constexpr float PS = pv_p_scale(MODE);
  constexpr float PS_LOG2 = MODE == PV::INT8 ? 7.99435343685885793f : (C::V8 ? 8.80735492205760410f : 0.f);
  static_assert(MODE != PV::INT8 || PS == 255.f, "PS_LOG2 is log2(255)");
  static_assert(!pv_is_fp8(MODE) || PS == 448.f, "PS_LOG2 is log2(448)");
  constexpr bool PIPE = C::PIPE;
  // 8-bit modes fold O's rescale by alpha into adding the block's fresh tile (one FFMA).
  constexpr bool FUSE_ALPHA = C::V8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK0 = sQ + C::Q_BYTES;
  const uint32_t sV0 = sK0 + 2 * C::K_BYTES;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;  // heavy (causal) tiles first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (p.Hq / p.Hkv);
  const int q0 = qb * C::BLK_Q;
  const int wq0 = q0 + warp * C::WARP_Q;

  const uint8_t* gQ = reinterpret_cast<const uint8_t*>(p.q8) + ((int64_t)(b * p.Hq + h) * p.Lq_pad + q0) * D;
  const int bhk = b * p.Hkv + hk;
  const uint8_t* gK = reinterpret_cast<const uint8_t*>(p.k8) + (int64_t)bhk * p.Lk_pad * D;
  const uint8_t* gV = reinterpret_cast<const uint8_t*>(p.v) + (int64_t)bhk * p.Lk_pad * D * (C::V8 ? 1 : 2);
  const float* kscale = p.k_scale + (int64_t)bhk * p.k_scales_per_head;

  const int kv_end = p.causal ? min(p.Lk, q0 + C::BLK_Q) : p.Lk;
  const int nkb = ceil_div(kv_end, C::BLK_K);

  auto load_k = [&](int kb) {
    load_tile_async<C::BLK_K, C::QK_CHUNKS, C::THREADS>(sK0 + (kb & 1) * C::K_BYTES, gK + (int64_t)kb * C::BLK_K * D, D, tid);
  };
  auto load_v = [&](int kb) {
    const uint32_t dst = sV0 + (kb & 1) * C::V_BYTES;
    if constexpr (C::V8) {
      load_tile_async<C::V_ROWS, C::V_CHUNKS, C::THREADS>(dst, gV + (int64_t)kb * C::BLK_K, p.Lk_pad, tid);
    } else {
      load_tile_async<C::V_ROWS, C::V_CHUNKS, C::THREADS>(dst, gV + (int64_t)kb * C::BLK_K * D * 2, D * 2, tid);
    }
  };

  // Pipeline: iteration kb computes S(kb+1) = Q·K(kb+1)ᵀ on the tensor cores while the same warp
  // runs the softmax of S(kb) (ALU/MUFU) and P(kb)·V(kb): the two are independent, so the
  // scheduler overlaps them within the warp (8 warps in lockstep cannot overlap each other).
  // Stage s of K holds blocks kb ≡ s (mod 2), as does stage s of V. One barrier per iteration:
  // at its top K(kb) and V(kb-1) are no longer read, so K(kb+2) and V(kb+1) may overwrite them.
  load_tile_async<C::BLK_Q, C::QK_CHUNKS, C::THREADS>(sQ, gQ, D, tid);
  load_k(0);
  cp_async_commit();
  load_v(0);
  if (nkb > 1) load_k(1);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  // This thread's Q scale (one per thread at every granularity), with sm_scale*log2e folded in.
  const float qs = p.q_scale[(int64_t)(b * p.Hq + h) * p.q_scales_per_head +
                             (wq0 / p.q_scale_rows) * p.q_groups + (g % p.q_groups)] * p.sm_scale_log2;

  float o_tile[1][NO][4], m_tile[1][2] = {{-INFINITY, -INFINITY}}, l_tile[1][2] = {{0.f, 0.f}};
  auto& o = o_tile[0];  // one m16 tile per warp (the epilogue takes a warp's tiles)
  auto& m_run = m_tile[0];
  auto& l_run = l_tile[0];
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] = 0.f;

  int sacc[NS][4];
  qk_block<C>(sacc, sQ, sK0, warp, lane);

  for (int kb = 0; kb < nkb; ++kb) {
    cp_async_wait<0>();
    __syncthreads();
    if (kb + 1 < nkb) load_v(kb + 1);
    if (kb + 2 < nkb) load_k(kb + 2);
    cp_async_commit();
    const uint32_t sV = sV0 + (kb & 1) * C::V_BYTES;
    const uint32_t sKn = sK0 + ((kb + 1) & 1) * C::K_BYTES;
    const int k0 = kb * C::BLK_K;
    // A warp whose rows all precede this block's first key has nothing to do here or later (causal).
    if (p.causal && k0 > wq0 + C::WARP_Q - 1) continue;

    // ---- scale S(kb) to base-2 logits and mask (branchy part, before the straight-line body) ----
    const float f = qs * kscale[kb * p.k_groups + (t % p.k_groups)];
    float s[NS][4];
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) s[j][i] = magic_to_float(sacc[j][i] + kAccBias) * f;
    if ((k0 + C::BLK_K > p.Lk) || (p.causal && k0 + C::BLK_K - 1 > wq0)) mask_tile(s, p, wq0, k0, g, t);

    // ---- S(kb+1) on the tensor cores (stale smem on the last iteration: computed, never used) ----
    if constexpr (PIPE) qk_block<C>(sacc, sQ, sKn, warp, lane);

    // ---- online softmax of S(kb) ----
    float alpha[2];
    bool raised = false;  // unused here: the 16-row kernel always rescales
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) alpha[hf] = online_softmax(s, hf, 1.f, PS_LOG2, m_run[hf], l_run[hf], raised);
    // ---- O += P·V ----
    if constexpr (!FUSE_ALPHA) {
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        o[n][0] *= alpha[0]; o[n][1] *= alpha[0];
        o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
      }
    }
    if constexpr (MODE == PV::FP16 || MODE == PV::FP16_ACC16) {
      uint32_t pa[NS / 2][4];  // k16 steps: S tiles 2kk (a0,a1) and 2kk+1 (a2,a3)
      auto pack_p = [&](int kk) {
        pa[kk][0] = pack_half2(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_half2(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      };
      if constexpr (MODE == PV::FP16_ACC16) {
#pragma unroll
        for (int kk = 0; kk < NS / 2; ++kk) pack_p(kk);
      }
      if constexpr (MODE == PV::FP16) {
#pragma unroll
        for (int kk = 0; kk < NS / 2; ++kk) {
          pack_p(kk);  // just before its k16 step: one step of P live, not all four
#pragma unroll
          for (int dp = 0; dp < NO / 2; ++dp) {
            uint32_t vf[4];
            const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            ldmatrix_x4_trans(vf, sV + swz<C::V_CHUNKS>(r, 2 * dp + (lane >> 4)));
            mma_f16_f32(o[2 * dp], pa[kk], vf[0], vf[1]);
            mma_f16_f32(o[2 * dp + 1], pa[kk], vf[2], vf[3]);
          }
        }
      } else {  // FP16_ACC16: fp16 accumulation inside the block, flushed to fp32
#pragma unroll
        for (int dp = 0; dp < NO / 2; ++dp) {
          uint32_t c[2][2] = {};
#pragma unroll
          for (int kk = 0; kk < NS / 2; ++kk) {
            uint32_t vf[4];
            const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            ldmatrix_x4_trans(vf, sV + swz<C::V_CHUNKS>(r, 2 * dp + (lane >> 4)));
            mma_f16_f16(c[0], pa[kk], vf[0], vf[1]);
            mma_f16_f16(c[1], pa[kk], vf[2], vf[3]);
          }
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float2 lo = __half22float2(*reinterpret_cast<__half2*>(&c[e][0]));
            const float2 hi = __half22float2(*reinterpret_cast<__half2*>(&c[e][1]));
            o[2 * dp + e][0] += lo.x; o[2 * dp + e][1] += lo.y;
            o[2 * dp + e][2] += hi.x; o[2 * dp + e][3] += hi.y;
          }
        }
      }
    } else {
      // 8-bit P (already scaled by PS): k32 step kk takes S tiles 4kk..4kk+3; V^T was stored
      // token-permuted to match. O's rescale by alpha is fused into adding the block's tile.
      uint32_t pa[NS / 4][4];
#pragma unroll
      for (int kk = 0; kk < NS / 4; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int j = 4 * kk + (r >> 1) * 2;  // reg0/1: tiles 4kk,4kk+1; reg2/3: 4kk+2,4kk+3
          const int e = (r & 1) * 2;            // even regs row g (c0,c1), odd regs row g+8 (c2,c3)
          if constexpr (MODE == PV::INT8) {
            pa[kk][r] = pack_u8x4_rn(s[j][e], s[j][e + 1], s[j + 1][e], s[j + 1][e + 1]);
          } else {
            pa[kk][r] = pack_e4m3x4(s[j][e], s[j][e + 1], s[j + 1][e], s[j + 1][e + 1]);
          }
        }
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t vf[NS / 4][4];
#pragma unroll
        for (int kk = 0; kk < NS / 4; ++kk) {
          const int r = dp * 16 + (lane & 7) + (lane >> 4) * 8;
          ldmatrix_x4(vf[kk], sV + swz<C::V_CHUNKS>(r, kk * 2 + ((lane >> 3) & 1)));
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float* od = o[2 * dp + e];
          if constexpr (MODE == PV::INT8) {
            int c[4] = {kAccInit, kAccInit, kAccInit, kAccInit};  // exact int32 sum over the block
#pragma unroll
            for (int kk = 0; kk < NS / 4; ++kk) mma_u8s8(c, pa[kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
#pragma unroll
            for (int i = 0; i < 4; ++i) od[i] = fmaf(od[i], alpha[i >> 1], magic_to_float(c[i] + kAccBias));
          } else if constexpr (MODE == PV::FP8) {
            float c[4] = {0.f, 0.f, 0.f, 0.f};  // fresh fp32 tile per block (two-level accumulation)
#pragma unroll
            for (int kk = 0; kk < NS / 4; ++kk) mma_e4m3_f32(c, pa[kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
#pragma unroll
            for (int i = 0; i < 4; ++i) od[i] = fmaf(od[i], alpha[i >> 1], c[i]);
          } else {
            uint32_t c[2] = {0u, 0u};  // fp16 accumulation inside the block (SageAttention2++)
#pragma unroll
            for (int kk = 0; kk < NS / 4; ++kk) mma_e4m3_f16(c, pa[kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
            const float2 lo = __half22float2(*reinterpret_cast<__half2*>(&c[0]));
            const float2 hi = __half22float2(*reinterpret_cast<__half2*>(&c[1]));
            od[0] = fmaf(od[0], alpha[0], lo.x); od[1] = fmaf(od[1], alpha[0], lo.y);
            od[2] = fmaf(od[2], alpha[1], hi.x); od[3] = fmaf(od[3], alpha[1], hi.y);
          }
        }
      }
    }
    if constexpr (!PIPE) qk_block<C>(sacc, sQ, sKn, warp, lane);
  }

  // ---- epilogue ----
  const float* vscale = C::V8 ? p.v_scale + (int64_t)bhk * 2 * D : nullptr;  // then the V means
  store_tile<D, MODE, 1>(p, b, h, wq0, g, t, o_tile, l_tile, m_tile, vscale);
}

}  // namespace cs::mma_sync
