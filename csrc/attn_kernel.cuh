// INT8 Q·Kᵀ attention with mma.sync, one P·V mode per instantiation.
//
// CTA: 64 or 128 query rows (launch_attn picks by shared memory per SM), warps of WARP_Q=16
// rows (one m16 tile each) or, on sm_90a, 128-row CTAs of 32-row warps (two m16 tiles share each
// K/V fragment; no Q·Kᵀ pipelining; an A/B switch, slower, see NOTES.md v4); the KV sequence is walked in blocks of BLK_K=64, K and V
// double-buffered by cp.async, and Q·Kᵀ of the next block is issued before the softmax of the
// current one. Q fragments are re-read from smem each k32 step. Scores are in base-2 units
// (sm_scale*log2e folded into the Q scale), exp2 on MUFU; int32 results convert to float
// through the mantissa (convert.cuh), not the quarter-rate I2F. Roles: params.h (no torch),
// tiles.h (quantization tiles), this file (mainloop + epilogue + launch), instantiations/*.cu
// (one file per variant; each holds the 64- and 128-row kernels). Measurements: NOTES.md.
#pragma once
#include "common.cuh"
#include "tiles.h"
#include "params.h"
#include "memory.cuh"
#include "mma.cuh"
#include "convert.cuh"

namespace cs {

// CTA_Q: query rows per CTA. The quantization tile (tiles.h, blk_q = 128: Q padding and
// PER_BLOCK scales) stays 128 rows; a CTA may cover half of it. 64-row CTAs (4 warps) run two
// per SM where shared memory allows: two independent CTAs drift out of phase, so one's
// softmax (MUFU/ALU) overlaps the other's MMAs, which 8 warps behind one barrier could not.
// WQ: query rows per warp: 16 (one m16 tile) or 32 (two m16 tiles: every ldmatrix'd K/V
// fragment feeds two MMAs, halving the K/V shared-memory reads per query row; sm_90 only). The
// quantization warp tile (tiles.h, warp_q = 16: PER_WARP/PER_THREAD Q scales) does not change:
// a 32-row warp holds one Q scale per m16 tile.
template <int D, PV MODE, int CTA_Q, int WQ>
struct AttnCfg {
  static_assert(D == 64 || D == 128, "head_dim: the mma.sync kernels support 64 and 128");
  static constexpr TileShape T = tiles_for(D, MODE, 80);
  static constexpr int BLK_Q = CTA_Q, WARP_Q = WQ, QW = T.warp_q, BLK_K = T.blk_k;
  static_assert(T.blk_q % CTA_Q == 0, "a CTA covers a whole number of CTAs per quantization tile");
  static_assert(QW == 16 && WARP_Q % QW == 0, "a warp covers whole 16-row quantization warp tiles");
  static_assert((BLK_Q == 128 || BLK_Q == 64) && (WARP_Q == 16 || WARP_Q == 32) && BLK_K == 64,
                "the fragment code below assumes 64|128 / 16|32 / 64");
  // 255 registers x 128 threads x 2 CTAs fit the 64K register file without a min-CTAs hint (with
  // the hint, sm_120a spilled 12-44 B at D=128). INT8 P·V fits three 64-row CTAs (168
  // registers on sm_90a, no spills; FP16 P·V spilled 40-120 B, INT8 on sm_80 100 B): 12 warps per SM.
#if defined(CS_INT8_MIN_CTAS)
  static constexpr int INT8_MIN_CTAS = CS_INT8_MIN_CTAS;  // A/B switch for measurements
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  static constexpr int INT8_MIN_CTAS = 3;
#else
  static constexpr int INT8_MIN_CTAS = 1;
#endif
  static constexpr int MIN_CTAS = (BLK_Q == 64 && WARP_Q == 16 && MODE == PV::INT8) ? INT8_MIN_CTAS : 1;
  static constexpr int WARPS = BLK_Q / WARP_Q;
  static constexpr int THREADS = WARPS * 32;
  static constexpr int MT = WARP_Q / 16;   // m16 tiles per warp
  static constexpr int NS = BLK_K / 8;     // n8 tiles of S
  static constexpr int NO = D / 8;         // n8 tiles of O
  static constexpr int KQ = D / 32;        // k32 steps of Q·Kᵀ
  static constexpr bool V8 = pv_is_8bit(MODE);
  static constexpr int QK_CHUNKS = D / 16;                 // 16-byte chunks per Q/K row
  static constexpr int V_ROWS = V8 ? D : BLK_K;            // V^T rows = channels; V rows = tokens
  static constexpr int V_CHUNKS = V8 ? BLK_K / 16 : D / 8; // 16-byte chunks per V row
  static constexpr int Q_BYTES = BLK_Q * D;
  static constexpr int K_BYTES = BLK_K * D;
  static constexpr int V_BYTES = V_ROWS * V_CHUNKS * 16;
  static constexpr int SMEM = Q_BYTES + 2 * (K_BYTES + V_BYTES);
  static_assert(NS % 4 == 0, "8-bit P·V consumes S in k32 steps (4 n8 tiles)");
};

// Where the register file allows (sm_90: no spills), int32 MMA accumulators start at kMagicI
// (convert.cuh) and convert with one FADD; elsewhere they start at 0 (+ IADD kMagicI): the 32
// live constants spilled on sm_120a. 32-row warps (MT = 2) start at 0 too: with the biased
// start they spilled on sm_90a.
template <int MT>
__host__ __device__ constexpr int acc_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  return MT > 1 ? 0 : kMagicI;
#else
  return 0;
#endif
}

// Q·Kᵀ of one 64-key block into int32 accumulators started at kAccInit, so
// S converts to float with one exact FADD instead of a quarter-rate I2F.
template <class C>
__device__ __forceinline__ void qk_block(int (&sacc)[C::MT][C::NS][4], const uint8_t* sQ, const uint8_t* sK,
                                         int warp, int lane) {
  constexpr int kAccInit = acc_init<C::MT>();
  if constexpr (C::MT > 1) lane = opaque(lane);  // no hoisted ldmatrix addresses (registers)
#pragma unroll
  for (int m = 0; m < C::MT; ++m)
#pragma unroll
    for (int j = 0; j < C::NS; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) sacc[m][j][i] = kAccInit;
#pragma unroll
  for (int kk = 0; kk < C::KQ; ++kk) {
    // 32-row warps: each k32 step's fragment loads wait for the previous step's MMAs, and within
    // a step every second K fragment for the MMAs before it. Without these fences ptxas issued
    // all the loads early (up to 12 MMAs in flight) and spilled O: the scheduler, not the live
    // values, set the register peak. (The fence is a real instruction: see opaque_after.)
    if constexpr (C::MT > 1) {
      if (kk > 0)
#pragma unroll
        for (int m = 0; m < C::MT; ++m) lane = opaque_after(lane, sacc[m][C::NS - 1][3]);
    }
    // Q fragments (A of m16n8k32) re-read from smem each step: keeping all of them in
    // registers (16 regs at D=128) does not fit beside two S tiles and O.
    uint32_t qf[C::MT][4];
#pragma unroll
    for (int m = 0; m < C::MT; ++m) {
      const int r = warp * C::WARP_Q + m * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(qf[m], sQ + swz<C::QK_CHUNKS>(r, kk * 2 + (lane >> 4)));
    }
#pragma unroll
    for (int jp = 0; jp < C::NS / 2; ++jp) {
      if constexpr (C::MT > 1) {
        if (jp > 0 && jp % 2 == 0) lane = opaque_after(lane, sacc[C::MT - 1][2 * jp - 1][3]);
      }
      uint32_t kf[4];
      const int r = jp * 16 + (lane & 7) + (lane >> 4) * 8;
      ldmatrix_x4(kf, sK + swz<C::QK_CHUNKS>(r, kk * 2 + ((lane >> 3) & 1)));
#pragma unroll
      for (int m = 0; m < C::MT; ++m) {
        mma_s8s8(sacc[m][2 * jp], qf[m], kf[0], kf[1]);
        mma_s8s8(sacc[m][2 * jp + 1], qf[m], kf[2], kf[3]);
      }
    }
  }
}

template <int D, PV MODE, int CTA_Q, int WQ>
__device__ __forceinline__ void attn_cta(const AttnParams& p) {
  using C = AttnCfg<D, MODE, CTA_Q, WQ>;
  constexpr int MT = C::MT, NS = C::NS, NO = C::NO;
  constexpr int kAccInit = acc_init<MT>(), kAccBias = kMagicI - kAccInit;
  // 8-bit P: the static P scale is folded into the exponent (P·PS = exp2(s - m + log2 PS)), so
  // l sums P·PS and the epilogue divides by PS once.
  constexpr float PS = pv_p_scale(MODE);
  constexpr float PS_LOG2 = MODE == PV::INT8 ? 7.99435343685885793f : (C::V8 ? 8.80735492205760410f : 0.f);
  static_assert(MODE != PV::INT8 || PS == 255.f, "PS_LOG2 is log2(255)");
  static_assert(!pv_is_fp8(MODE) || PS == 448.f, "PS_LOG2 is log2(448)");
#if defined(CS_NO_QK_PIPELINE)
  constexpr bool PIPE = false;  // A/B switch for measurements
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  // FP8 mma.sync is lowered to HMMA on sm_90 (correctness only there); pipelined it spills.
  constexpr bool PIPE = !pv_is_fp8(MODE);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
  // sm_120a allocates differently: pipelined at D=128 it spilled 4-28 B (fp8, int8, fp16-acc16).
  constexpr bool PIPE = D == 64;
#else
  constexpr bool PIPE = true;
#endif
  // 32-row warps: a second S tile in flight (64 more int32) does not fit beside O (128 fp32 at
  // D=128) in 255 registers; they run Q·Kᵀ after P·V, and rely on two CTAs per SM for overlap.
  constexpr bool PIPE_W = PIPE && MT == 1;
  // 8-bit modes fold O's rescale by alpha into adding the block's fresh tile (one FFMA).
  constexpr bool FUSE_ALPHA = C::V8;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* sQ = smem;
  uint8_t* sK0 = smem + C::Q_BYTES;
  uint8_t* sV0 = sK0 + 2 * C::K_BYTES;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;  // heavy (causal) tiles first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (p.Hq / p.Hkv);
  const int q0 = qb * C::BLK_Q;
  const int wq0 = q0 + warp * C::WARP_Q;

  const uint8_t* gQ = reinterpret_cast<const uint8_t*>(p.q8) + ((int64_t)(b * p.Hq + h) * p.Lq_pad + q0) * D;
  // K/V head: 32-row warps re-read its index from shared memory in the loop and rebuild the
  // three global pointers from the (constant-bank) params: 6 registers they lack.
  const int bhk = b * p.Hkv + hk;
  __shared__ int s_bhk;
  if (tid == 0) s_bhk = bhk;  // read only after the first barrier
  auto bhk_loop = [&]() -> int {
    if constexpr (C::MT > 1) return *reinterpret_cast<volatile int*>(&s_bhk);
    else return bhk;
  };
  const uint8_t* gK0 = reinterpret_cast<const uint8_t*>(p.k8) + (int64_t)bhk * p.Lk_pad * D;
  const uint8_t* gV0 = reinterpret_cast<const uint8_t*>(p.v) + (int64_t)bhk * p.Lk_pad * D * (C::V8 ? 1 : 2);
  const float* kscale0 = p.k_scale + (int64_t)bhk * p.k_scales_per_head;
  auto gK = [&](int hd) { return C::MT > 1 ? reinterpret_cast<const uint8_t*>(p.k8) + (int64_t)hd * p.Lk_pad * D : gK0; };
  auto gV = [&](int hd) { return C::MT > 1 ? reinterpret_cast<const uint8_t*>(p.v) + (int64_t)hd * p.Lk_pad * D * (C::V8 ? 1 : 2) : gV0; };
  auto kscale = [&](int hd) { return C::MT > 1 ? p.k_scale + (int64_t)hd * p.k_scales_per_head : kscale0; };

  const int kv_end = p.causal ? min(p.Lk, q0 + C::BLK_Q) : p.Lk;
  const int nkb = ceil_div(kv_end, C::BLK_K);

  // 32-row warps: the cp.async addresses (4-8 copies per thread per tile) are recomputed per
  // block from an opaque tid instead of held across the loop (they spilled 40-96 B otherwise).
  auto load_k = [&](int kb, int hd) {
    const int tl = C::MT > 1 ? opaque(tid) : tid;
    load_tile_async<C::BLK_K, C::QK_CHUNKS, C::THREADS>(sK0 + (kb & 1) * C::K_BYTES, gK(hd) + (int64_t)kb * C::BLK_K * D, D, tl);
  };
  auto load_v = [&](int kb, int hd) {
    const int tl = C::MT > 1 ? opaque(tid) : tid;
    uint8_t* dst = sV0 + (kb & 1) * C::V_BYTES;
    if constexpr (C::V8) {
      load_tile_async<C::V_ROWS, C::V_CHUNKS, C::THREADS>(dst, gV(hd) + (int64_t)kb * C::BLK_K, p.Lk_pad, tl);
    } else {
      load_tile_async<C::V_ROWS, C::V_CHUNKS, C::THREADS>(dst, gV(hd) + (int64_t)kb * C::BLK_K * D * 2, D * 2, tl);
    }
  };

  // Pipeline: iteration kb computes S(kb+1) = Q·K(kb+1)ᵀ on the tensor cores while the same warp
  // runs the softmax of S(kb) (ALU/MUFU) and P(kb)·V(kb): the two are independent, so the
  // scheduler overlaps them within the warp (8 warps in lockstep cannot overlap each other).
  // Stage s of K holds blocks kb ≡ s (mod 2), as does stage s of V. One barrier per iteration:
  // at its top K(kb) and V(kb-1) are no longer read, so K(kb+2) and V(kb+1) may overwrite them.
  load_tile_async<C::BLK_Q, C::QK_CHUNKS, C::THREADS>(sQ, gQ, D, tid);
  load_k(0, bhk);
  cp_async_commit();
  load_v(0, bhk);
  if (nkb > 1) load_k(1, bhk);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  // 32-row warps park their two Q scales in shared memory (one slot per thread and tile,
  // conflict-free; 2 LDS per block) instead of holding them across the loop: the last two
  // registers INT8 P·V at D=128 lacked. (Parking the running max and sum too made ptxas
  // schedule more aggressively and spill more.)
  constexpr bool QS_SMEM = MT > 1;
  __shared__ float s_qs[QS_SMEM ? MT * C::THREADS : 1];
  auto qs_slot = [&](int m) -> volatile float& { return reinterpret_cast<volatile float*>(s_qs)[m * C::THREADS + tid]; };

  // This thread's Q scale (one per thread at every granularity), with sm_scale*log2e folded in.
  // A 32-row warp holds one per m16 tile (the quantization warp tile stays 16 rows).
  float qs[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    qs[m] = p.q_scale[(int64_t)(b * p.Hq + h) * p.q_scales_per_head +
                      ((wq0 + m * C::QW) / p.q_scale_rows) * p.q_groups + (g % p.q_groups)] * p.sm_scale_log2;
    if constexpr (QS_SMEM) qs_slot(m) = qs[m];  // read back by this thread only
  }

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

  int sacc[MT][NS][4];
  qk_block<C>(sacc, sQ, sK0, warp, lane);

  for (int kb = 0; kb < nkb; ++kb) {
    cp_async_wait<0>();
    __syncthreads();
    {
      const int hd = bhk_loop();
      if (kb + 1 < nkb) load_v(kb + 1, hd);
      if (kb + 2 < nkb) load_k(kb + 2, hd);
      cp_async_commit();
    }
    const uint8_t* sV = sV0 + (kb & 1) * C::V_BYTES;
    const uint8_t* sKn = sK0 + ((kb + 1) & 1) * C::K_BYTES;
    const int k0 = kb * C::BLK_K;
    // A warp whose rows all precede this block's first key has nothing to do here or later (causal).
    if (p.causal && k0 > wq0 + C::WARP_Q - 1) continue;

    // ---- scale S(kb) to base-2 logits and mask (branchy part, before the straight-line body) ----
    const int kgrp = C::MT > 1 ? (t & (p.k_groups - 1)) : (t % p.k_groups);  // k_groups: 1 or 4
    const float ks = kscale(bhk_loop())[kb * p.k_groups + kgrp];
    float f[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) f[m] = (QS_SMEM ? qs_slot(m) : qs[m]) * ks;
    float s[MT][NS][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int j = 0; j < NS; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) s[m][j][i] = magic_to_float(sacc[m][j][i] + kAccBias) * f[m];
    if ((k0 + C::BLK_K > p.Lk) || (p.causal && k0 + C::BLK_K - 1 > wq0)) {
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int row = wq0 + m * 16 + g + (i >> 1) * 8;
            const int col = k0 + j * 8 + 2 * t + (i & 1);
            if (col >= p.Lk || (p.causal && col > row)) s[m][j][i] = -INFINITY;
          }
    }

    // ---- S(kb+1) on the tensor cores (stale smem on the last iteration: computed, never used) ----
    if constexpr (PIPE_W) qk_block<C>(sacc, sQ, sKn, warp, lane);

    // ---- online softmax of S(kb) ----
    float alpha[MT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NS; ++j) mx = fmaxf(mx, fmaxf(s[m][j][2 * hf], s[m][j][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[m][hf], mx);
        const float m_use = (m_new == -INFINITY) ? 0.f : m_new;  // no key seen yet: exp2 gives 0, not NaN
        alpha[m][hf] = ex2(m_run[m][hf] - m_use);
        m_run[m][hf] = m_new;
        const float sub = m_use - PS_LOG2;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          s[m][j][2 * hf] = ex2(s[m][j][2 * hf] - sub);
          s[m][j][2 * hf + 1] = ex2(s[m][j][2 * hf + 1] - sub);
          sum += s[m][j][2 * hf] + s[m][j][2 * hf + 1];
        }
        l_run[m][hf] = l_run[m][hf] * alpha[m][hf] + sum;
      }
    // ---- O += P·V ----
    int lane_v = C::MT > 1 ? opaque(lane) : lane;  // as in qk_block
    if constexpr (!FUSE_ALPHA) {
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NO; ++n) {
          o[m][n][0] *= alpha[m][0]; o[m][n][1] *= alpha[m][0];
          o[m][n][2] *= alpha[m][1]; o[m][n][3] *= alpha[m][1];
        }
    }
    if constexpr (MODE == PV::FP16 || MODE == PV::FP16_ACC16) {
      uint32_t pa[MT][NS / 2][4];  // k16 steps: S tiles 2kk (a0,a1) and 2kk+1 (a2,a3)
      auto pack_p = [&](int kk) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          pa[m][kk][0] = pack_half2(s[m][2 * kk][0], s[m][2 * kk][1]);
          pa[m][kk][1] = pack_half2(s[m][2 * kk][2], s[m][2 * kk][3]);
          pa[m][kk][2] = pack_half2(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
          pa[m][kk][3] = pack_half2(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
        }
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
            const int r = kk * 16 + (lane_v & 7) + ((lane_v >> 3) & 1) * 8;
            ldmatrix_x4_trans(vf, sV + swz<C::V_CHUNKS>(r, 2 * dp + (lane_v >> 4)));
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              mma_f16_f32(o[m][2 * dp], pa[m][kk], vf[0], vf[1]);
              mma_f16_f32(o[m][2 * dp + 1], pa[m][kk], vf[2], vf[3]);
            }
          }
        }
      } else {  // FP16_ACC16: fp16 accumulation inside the block, flushed to fp32
#pragma unroll
        for (int dp = 0; dp < NO / 2; ++dp) {
          uint32_t c[MT][2][2] = {};
#pragma unroll
          for (int kk = 0; kk < NS / 2; ++kk) {
            uint32_t vf[4];
            const int r = kk * 16 + (lane_v & 7) + ((lane_v >> 3) & 1) * 8;
            ldmatrix_x4_trans(vf, sV + swz<C::V_CHUNKS>(r, 2 * dp + (lane_v >> 4)));
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              mma_f16_f16(c[m][0], pa[m][kk], vf[0], vf[1]);
              mma_f16_f16(c[m][1], pa[m][kk], vf[2], vf[3]);
            }
          }
#pragma unroll
          for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float2 lo = __half22float2(*reinterpret_cast<__half2*>(&c[m][e][0]));
              const float2 hi = __half22float2(*reinterpret_cast<__half2*>(&c[m][e][1]));
              o[m][2 * dp + e][0] += lo.x; o[m][2 * dp + e][1] += lo.y;
              o[m][2 * dp + e][2] += hi.x; o[m][2 * dp + e][3] += hi.y;
            }
        }
      }
    } else {
      // 8-bit P (already scaled by PS): k32 step kk takes S tiles 4kk..4kk+3; V^T was stored
      // token-permuted to match. O's rescale by alpha is fused into adding the block's tile.
      uint32_t pa[MT][NS / 4][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int kk = 0; kk < NS / 4; ++kk)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int j = 4 * kk + (r >> 1) * 2;  // reg0/1: tiles 4kk,4kk+1; reg2/3: 4kk+2,4kk+3
            const int e = (r & 1) * 2;            // even regs row g (c0,c1), odd regs row g+8 (c2,c3)
            if constexpr (MODE == PV::INT8) {
              pa[m][kk][r] = pack_u8x4_rn(s[m][j][e], s[m][j][e + 1], s[m][j + 1][e], s[m][j + 1][e + 1]);
            } else {
              pa[m][kk][r] = pack_e4m3x4(s[m][j][e], s[m][j][e + 1], s[m][j + 1][e], s[m][j + 1][e + 1]);
            }
          }
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t vf[NS / 4][4];
#pragma unroll
        for (int kk = 0; kk < NS / 4; ++kk) {
          const int r = dp * 16 + (lane_v & 7) + (lane_v >> 4) * 8;
          ldmatrix_x4(vf[kk], sV + swz<C::V_CHUNKS>(r, kk * 2 + ((lane_v >> 3) & 1)));
        }
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float* od = o[m][2 * dp + e];
            if constexpr (MODE == PV::INT8) {
              int c[4] = {kAccInit, kAccInit, kAccInit, kAccInit};  // exact int32 sum over the block
#pragma unroll
              for (int kk = 0; kk < NS / 4; ++kk) mma_u8s8(c, pa[m][kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
#pragma unroll
              for (int i = 0; i < 4; ++i) od[i] = FUSE_ALPHA ? fmaf(od[i], alpha[m][i >> 1], magic_to_float(c[i] + kAccBias)) : od[i] + magic_to_float(c[i] + kAccBias);
            } else if constexpr (MODE == PV::FP8) {
              float c[4] = {0.f, 0.f, 0.f, 0.f};  // fresh fp32 tile per block (two-level accumulation)
#pragma unroll
              for (int kk = 0; kk < NS / 4; ++kk) mma_e4m3_f32(c, pa[m][kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
#pragma unroll
              for (int i = 0; i < 4; ++i) od[i] = FUSE_ALPHA ? fmaf(od[i], alpha[m][i >> 1], c[i]) : od[i] + c[i];
            } else {
              uint32_t c[2] = {0u, 0u};  // fp16 accumulation inside the block (SageAttention2++)
#pragma unroll
              for (int kk = 0; kk < NS / 4; ++kk) mma_e4m3_f16(c, pa[m][kk], vf[kk][2 * e], vf[kk][2 * e + 1]);
              const float2 lo = __half22float2(*reinterpret_cast<__half2*>(&c[0]));
              const float2 hi = __half22float2(*reinterpret_cast<__half2*>(&c[1]));
              const float a0 = FUSE_ALPHA ? alpha[m][0] : 1.f, a1 = FUSE_ALPHA ? alpha[m][1] : 1.f;
              od[0] = fmaf(od[0], a0, lo.x); od[1] = fmaf(od[1], a0, lo.y);
              od[2] = fmaf(od[2], a1, hi.x); od[3] = fmaf(od[3], a1, hi.y);
            }
          }
        if constexpr (MT > 1) {
          if (dp % 2 == 1)  // every second V fragment waits for the P·V tiles before it (see qk_block)
#pragma unroll
            for (int m = 0; m < MT; ++m)
#pragma unroll
              for (int e = 0; e < 2; ++e) lane_v = opaque_after(lane_v, o[m][2 * dp + e][3]);
        }
      }
    }
    if constexpr (!PIPE_W) qk_block<C>(sacc, sQ, sKn, warp, lane);
  }

  // ---- epilogue: O / l (times V's per-channel scale / P scale for 8-bit modes) ----
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[m][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      l_run[m][hf] = l * (1.f / PS);  // l summed P·PS (8-bit modes)
    }
    const float* vscale = p.v_scale + (int64_t)(C::MT > 1 ? bhk_loop() : b * p.Hkv + hk) * D;  // (32-row warps: from smem)
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = wq0 + m * 16 + g + hf * 8;
      if (row >= p.Lq) continue;
      const float l = l_run[m][hf];
      const float inv_l = l > 0.f ? 1.f / l : 0.f;
      char* orow = reinterpret_cast<char*>(p.o) + ((int64_t)b * p.o_sb + (int64_t)h * p.o_sh + (int64_t)row * p.o_sn) * 2;
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        const int d = n * 8 + 2 * t;
        float x0 = o[m][n][2 * hf], x1 = o[m][n][2 * hf + 1];
        if constexpr (C::V8) {
          constexpr float inv_ps = 1.f / pv_p_scale(MODE);
          x0 *= vscale[d] * inv_ps;
          x1 *= vscale[d + 1] * inv_ps;
        }
        x0 *= inv_l; x1 *= inv_l;
        if (p.out_bf16) *reinterpret_cast<__nv_bfloat162*>(orow + d * 2) = __floats2bfloat162_rn(x0, x1);
        else *reinterpret_cast<__half2*>(orow + d * 2) = __floats2half2_rn(x0, x1);
      }
      if (p.lse != nullptr && t == 0) {
        const int64_t idx = (int64_t)(b * p.Hq + h) * p.Lq + row;
        float lse = l > 0.f ? (m_run[m][hf] + log2f(l)) * 0.69314718055994531f : -INFINITY;
        if (p.lse_corr != nullptr) lse += p.lse_corr[idx];
        p.lse[idx] = lse;
      }
    }
}

// 128-row CTAs: one per SM (two 8-warp CTAs at 128 regs spilled 100-240 B at D=128).
// 64-row CTAs: two per SM at the same 255 registers per thread, only where two FP16-V CTAs fit
// in shared memory (sm_80, sm_90); on the ~100 KB arches the host never launches them, and
// their body is a stub (compiled there, they spilled 12-44 B on sm_120a).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 870 || __CUDA_ARCH__ == 890 || __CUDA_ARCH__ >= 1200)
constexpr bool kSmallSmemArch = true;
#else
constexpr bool kSmallSmemArch = false;
#endif

// 32-row warps: compiled for sm_90a only (where they were measured, NOTES.md v4), for the
// INT8 and FP16 P·V modes and FP16-acc16 at D=64 (at D=128 it spilled 80-120 B; FP8 is ptxas'
// HMMA emulation on sm_90a); elsewhere a stub, never launched.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
constexpr bool kWarp32Arch = true;
#else
constexpr bool kWarp32Arch = false;
#endif
template <int D, PV MODE>
__host__ __device__ constexpr bool warp32_mode() { return MODE == PV::INT8 || MODE == PV::FP16 || (MODE == PV::FP16_ACC16 && D == 64); }

template <int D, PV MODE, int CTA_Q, int WQ>
__global__ void __launch_bounds__(AttnCfg<D, MODE, CTA_Q, WQ>::THREADS, AttnCfg<D, MODE, CTA_Q, WQ>::MIN_CTAS)
attn_kernel(const __grid_constant__ AttnParams p) {
  if constexpr (kSmallSmemArch && CTA_Q == 64) __trap();
  else if constexpr (WQ == 32 && !(kWarp32Arch && warp32_mode<D, MODE>())) __trap();
  else attn_cta<D, MODE, CTA_Q, WQ>(p);
}

template <int D, PV MODE, int CTA_Q, int WQ>
cudaError_t launch_cta(const AttnParams& p, cudaStream_t stream) {
  using C = AttnCfg<D, MODE, CTA_Q, WQ>;
  auto kernel = attn_kernel<D, MODE, CTA_Q, WQ>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.Lq_pad / C::BLK_Q, p.Hq, p.B);
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(p);
  return cudaGetLastError();
}

// 64-row CTAs where two FP16-V CTAs fit in one SM's shared memory (sm_80, sm_90: 164/228 KB),
// else 128-row CTAs (sm_86/89/120 at ~100 KB: one 4-warp CTA per SM would idle the SM). The
// test is the same for every mode so that each arch uses one CTA shape (see kSmallSmemArch).
//
// `#define CS_WARP_Q 32` (A/B switch): on sm_90, 128-row CTAs of four 32-row warps, two CTAs per
// SM (255 registers x 128 threads x 2, 2 x 65 KB of shared memory) for the warp32_mode variants.
// Not the default: measured 4-15% slower than the 16-row kernels on the H200 (NOTES.md v4). The
// kernel is instantiated either way, so test_sass keeps checking that it fits without spills.
#ifndef CS_WARP_Q
#define CS_WARP_Q 16
#endif
static_assert(CS_WARP_Q == 16 || CS_WARP_Q == 32, "CS_WARP_Q: 16 or 32");
template <int D, PV MODE>
cudaError_t launch_attn(const AttnParams& p, cudaStream_t stream) {
#ifdef CS_CTA_Q
  return launch_cta<D, MODE, CS_CTA_Q, 16>(p, stream);  // A/B switch for measurements
#else
  int dev = 0, smem_sm = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err != cudaSuccess) return err;
  if constexpr (warp32_mode<D, MODE>()) {
    if (CS_WARP_Q == 32 && major == 9 && minor == 0) return launch_cta<D, MODE, 128, 32>(p, stream);
  }
  constexpr int kReservedPerCta = 1024;  // the runtime's own shared memory per CTA (sm_80+)
  if (2 * (AttnCfg<D, PV::FP16, 64, 16>::SMEM + kReservedPerCta) <= smem_sm) return launch_cta<D, MODE, 64, 16>(p, stream);
  return launch_cta<D, MODE, 128, 16>(p, stream);
#endif
}

}  // namespace cs
