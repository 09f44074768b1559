// INT8 Q·Kᵀ attention with mma.sync, one P·V mode per instantiation.
//
// CTA: 64 or 128 query rows (launch_attn picks by shared memory per SM), warps of 16 rows (one
// m16 tile each); the KV sequence is walked in blocks of BLK_K=64, K and V double-buffered by
// cp.async, and Q·Kᵀ of the next block is issued before the softmax of the current one. Q
// fragments are re-read from smem each k32 step. Scores are in base-2 units (sm_scale*log2e
// folded into the Q scale), exp2 on MUFU; int32 results convert to float through the mantissa
// (convert.cuh), not the quarter-rate I2F. This is the kernel of every arch; on sm_90 FP16 and
// INT8 P·V run the 32-row-warp kernel of attn_w32.cuh instead. Roles: params.h (no torch),
// tiles.h (quantization tiles), this file (mainloop + epilogue + launch), instantiations/*.cu
// (one file per variant; each holds the 64- and 128-row kernels). Measurements: NOTES.md.
#pragma once
#include "common.cuh"
#include "tiles.h"
#include "params.h"
#include "memory.cuh"
#include "mma.cuh"
#include "convert.cuh"
#include "attn_launch.h"
#include "epilogue.cuh"
#include "mask.cuh"

namespace cs {

// CTA_Q: query rows per CTA. The quantization tile (tiles.h, blk_q = 128: Q padding and
// PER_BLOCK scales) stays 128 rows; a CTA may cover half of it. 64-row CTAs (4 warps) run two
// per SM where shared memory allows: two independent CTAs drift out of phase, so one's
// softmax (MUFU/ALU) overlaps the other's MMAs, which 8 warps behind one barrier could not.
template <int D, PV MODE, int CTA_Q>
struct AttnCfg {
  static_assert(D == 64 || D == 128, "head_dim: the mma.sync kernels support 64 and 128");
  static constexpr TileShape T = tiles_for(D, MODE, 80);
  static constexpr int BLK_Q = CTA_Q, WARP_Q = T.warp_q, BLK_K = T.blk_k;
  static_assert(T.blk_q % CTA_Q == 0, "a CTA covers a whole number of CTAs per quantization tile");
  static_assert((BLK_Q == 128 || BLK_Q == 64) && WARP_Q == 16 && BLK_K == 64,
                "the fragment code below assumes 64|128 / 16 / 64");
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
  static constexpr int MIN_CTAS = (BLK_Q == 64 && MODE == PV::INT8) ? INT8_MIN_CTAS : 1;
  static constexpr int WARPS = BLK_Q / WARP_Q;
  static constexpr int THREADS = WARPS * 32;
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
// live constants spilled on sm_120a.
__host__ __device__ constexpr int acc_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
  return kMagicI;
#else
  return 0;
#endif
}

// Q·Kᵀ of one 64-key block into int32 accumulators started at kAccInit, so
// S converts to float with one exact FADD instead of a quarter-rate I2F.
template <class C>
__device__ __forceinline__ void qk_block(int (&sacc)[C::NS][4], uint32_t sQ, uint32_t sK, int warp, int lane) {
  constexpr int kAccInit = acc_init();
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
__device__ __forceinline__ void attn_cta(const AttnParams& p) {
  using C = AttnCfg<D, MODE, CTA_Q>;
  constexpr int NS = C::NS, NO = C::NO;
  constexpr int kAccInit = acc_init(), kAccBias = kMagicI - kAccInit;
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

  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

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
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < NS; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[hf], mx);
      const float m_use = (m_new == -INFINITY) ? 0.f : m_new;  // no key seen yet: exp2 gives 0, not NaN
      alpha[hf] = ex2(m_run[hf] - m_use);
      m_run[hf] = m_new;
      const float sub = m_use - PS_LOG2;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        s[j][2 * hf] = ex2(s[j][2 * hf] - sub);
        s[j][2 * hf + 1] = ex2(s[j][2 * hf + 1] - sub);
        sum += s[j][2 * hf] + s[j][2 * hf + 1];
      }
      l_run[hf] = l_run[hf] * alpha[hf] + sum;
    }
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
  const float* vscale = p.v_scale + (int64_t)bhk * D;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) store_row_half<D, MODE>(p, b, h, wq0 + g + hf * 8, t, hf, o, l_run[hf], m_run[hf], vscale);
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

template <int D, PV MODE, int CTA_Q>
__global__ void __launch_bounds__(AttnCfg<D, MODE, CTA_Q>::THREADS, AttnCfg<D, MODE, CTA_Q>::MIN_CTAS)
attn_kernel(const __grid_constant__ AttnParams p) {
  if constexpr (kSmallSmemArch && CTA_Q == 64) __trap();
  else attn_cta<D, MODE, CTA_Q>(p);
}

template <int D, PV MODE, int CTA_Q>
cudaError_t launch_cta(const AttnParams& p, cudaStream_t stream) {
  using C = AttnCfg<D, MODE, CTA_Q>;
  auto kernel = attn_kernel<D, MODE, CTA_Q>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.Lq_pad / C::BLK_Q, p.Hq, p.B);
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(p);
  return cudaGetLastError();
}

// On sm_90, FP16 and INT8 P·V run the 32-row-warp kernel (attn_w32.cuh; its instantiations are
// in their own files, compiled with their own ptxas options). Elsewhere, and for the other modes:
// 64-row CTAs where two FP16-V CTAs fit in one SM's shared memory (sm_80, sm_90: 164/228 KB),
// else 128-row CTAs (sm_86/89/120 at ~100 KB: one 4-warp CTA per SM would idle the SM). The
// test is the same for every mode so that each arch uses one CTA shape (see kSmallSmemArch).
// The environment variable COMFY_SAGE_CUDA_KERNEL=w16 forces the 16-row kernel on sm_90 too, so
// that the kernel the other arches run is tested on a Hopper machine.
template <int D, PV MODE>
cudaError_t launch_attn(const AttnParams& p, cudaStream_t stream) {
#ifdef CS_CTA_Q
  return launch_cta<D, MODE, CS_CTA_Q>(p, stream);  // A/B switch for measurements
#else
  int dev = 0, smem_sm = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err != cudaSuccess) return err;
  if constexpr (w32_mode(MODE)) {
    if (major == 9 && minor == 0 && !force_w16()) return launch_w32<D, MODE>(p, stream);
  }
  constexpr int kReservedPerCta = 1024;  // the runtime's own shared memory per CTA (sm_80+)
  if (2 * (AttnCfg<D, PV::FP16, 64>::SMEM + kReservedPerCta) <= smem_sm) return launch_cta<D, MODE, 64>(p, stream);
  return launch_cta<D, MODE, 128>(p, stream);
#endif
}

}  // namespace cs
