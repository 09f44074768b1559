// The Hopper attention kernel: INT8 Q·Kᵀ and FP8 (or FP16) P·V on wgmma, K/V by TMA through a ring
// of shared-memory stages, one producer warp and two consumer warpgroups.
//
// CTA = 128 query rows of one (batch, head). Warpgroup 0 is the producer (one thread issues every
// TMA load); warpgroups 1 and 2 each own 64 rows and walk the same K/V blocks (key_block: 128 keys in
// the FP8 mode, 192 in FP8_ACC16 and FP16), issuing their wgmma freely: the tensor pipe serializes
// them, which staggers the two softmaxes. (FA3's explicit ping-pong, two named barriers handing the
// tensor cores over, measured 1.5-4% slower here: csrc/sm90/NOTES.md v1/v3/v9.)
//
// Per consumer warpgroup and block j (after the first): issue S(j) = Q·K(j)ᵀ (s8·s8 → s32, the
// accumulators pre-set to 0x4B400000 so that their bits read as the float 1.5·2²³ + S, exact for
// |S| < 2²²: INT8 Q·K ≤ 127²·128 = 2.06e6) and O'(j-1) = P(j-1)·V(j-1) (e4m3, a fresh tile: fp32,
// or f16 in FP8_ACC16); wait for S, take the row max on the raw integers, exponentials over S while
// P·V runs, wait for O', fold it into the true fp32 O (O = O·α + O': SageAttention2's two-level
// accumulation, the FP8 MMA keeps ~22 bits), then P(j) = exp2(S·scale − m + log2 448) packed to
// e4m3 straight into wgmma's A-register layout.
//
// Accurate mode (PV::FP16): P·V in f16 (m64nDk16, P in [0,1] rounded to f16, Vᵀ in f16 unscaled,
// tokens in order) accumulated straight into O: the f16 wgmma's fp32 accumulation is exact enough,
// so there is no fresh tile and O is rescaled by α (one FMUL per element) before the next P·V.
//
// P in registers, as wgmma's 8-bit A fragment wants it, holds keys {2q, 2q+1, 2q+8, 2q+9} of each
// 16 at k positions {4q .. 4q+3} (q = lane % 4): V is stored with its tokens permuted the same
// way within every 16 (quant.cuh, `vt_pos`), so no shuffles are needed.
#pragma once
#include <type_traits>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "sm90/params.h"
#include "sm90/ptx.cuh"
#include "sm90/wgmma_ops.cuh"

namespace cs { namespace sm90 {

template <int D, PV MODE>
struct SmemLayout {
  static_assert(D == 64 || D == 128, "head dim 64 or 128");
  static_assert(MODE == PV::FP8 || MODE == PV::FP8_ACC16 || MODE == PV::FP16, "FP8, FP8_ACC16 or FP16 P·V");
  static constexpr int kBlockN = key_block(MODE);
  static constexpr int kVB = vt_bytes(MODE);
  static constexpr int q_bytes = kBlockM * D;   // int8, rows of D bytes
  static constexpr int k_bytes = kBlockN * D;   // int8, rows of D bytes
  // Vᵀ in sub-tiles, each one TMA box and one swizzle span: e4m3 rows of 128 tokens (128 B) when the
  // block is 128 keys, else sub-tiles of 64 tokens (f16: 128 B rows; e4m3: 64 B rows).
  static constexpr int kSubTokens = kVB == 1 && kBlockN == 128 ? 128 : 64;
  static constexpr int kSubRow = kSubTokens * kVB;   // bytes per Vᵀ row of one sub-tile: the swizzle span
  static constexpr int n_sub = kBlockN / kSubTokens;
  static constexpr int v_sub = D * kSubRow;
  static constexpr int v_bytes = n_sub * v_sub;
  // As many stages as fit in 227 KB (the f16 tile of 192 keys at head dim 128: two), at most kMaxStages.
  static constexpr int kStages = (232448 - q_bytes - 2048) / (k_bytes + v_bytes) < kMaxStages
                                     ? (232448 - q_bytes - 2048) / (k_bytes + v_bytes) : kMaxStages;
  static_assert(kStages >= 2, "a K/V ring of two stages at least");
  static constexpr int q_off = 0;
  static constexpr int k_off = q_off + q_bytes;
  static constexpr int v_off = k_off + kStages * k_bytes;
  static constexpr int bar_off = v_off + kStages * v_bytes;
  static constexpr int n_bars = 1 + 4 * kStages;
  static constexpr int bytes = bar_off + 8 * n_bars + 1024;  // + slack to align the base to 1024
  static_assert(q_bytes % 1024 == 0 && k_bytes % 1024 == 0 && v_bytes % 1024 == 0, "swizzle atoms need 1024-byte alignment");
};

constexpr uint32_t kMagicBits = kMagicI;         // the accumulator pre-set (common/convert.cuh: 1.5 * 2^23)
constexpr float kLog2P = 8.807354922057604f;      // log2(448): P's static FP8 scale folded into exp2
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLnP = 6.104793232414985f;        // ln(448)

// Row max, exponentials and packing of one 64 x N S tile into P·V's A fragments (e4m3 or f16);
// MASK only on the blocks that cross the sequence end or the causal diagonal. The thread holds
// rows r, r+8 (i) and columns 8g + 2q + c (g < N/8, c < 2): S[4g + 2i + c]. One K scale per block.
template <bool MASK, PV MODE, int N>
struct Softmax {
  static constexpr int kRegs = N / 2;
  static constexpr bool kE4M3 = MODE != PV::FP16;
  static constexpr int kSlices = kE4M3 ? N / 32 : N / 16;  // k32 (e4m3) or k16 (f16) slices
  static constexpr float kLog2Scale = kE4M3 ? kLog2P : 0.f;
  // Pass 1: masked scores -> 0 (below every biased score), the scaled row max, m and α updated.
  __device__ __forceinline__ static void max_pass(uint32_t (&S)[kRegs], float sc, float (&m)[2], float (&alpha)[2],
                                                  int col0, int row0, int Lk, int causal) {
    int mx[2] = {0, 0};
#pragma unroll
    for (int g = 0; g < N / 8; ++g) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int idx = 4 * g + 2 * i + c;
          if (MASK) {
            const int col = col0 + 8 * g + c, row = row0 + 8 * i;
            if (col >= Lk || (causal && col > row)) S[idx] = 0;
          }
          mx[i] = max(mx[i], static_cast<int>(S[idx]));
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      // The max from the exact integer score (1.5*2^23 + S - 1.5*2^23 is exact): m feeds the lse,
      // and 1.5*2^23 * scale rounded would put up to half its ulp into it (2.7e-3 for the large
      // scales of an all-zero K group).
      float r = magic_to_float(mx[i]) * sc;
      r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 1));
      r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, 2));
      const float m_new = fmaxf(m[i], r);
      alpha[i] = ex2(m[i] - m_new);
      m[i] = m_new;
    }
  }
  // Pass 2: P̃ = exp2(s·scale − m (+ log2 448 for e4m3)) written over S as floats, so that it runs
  // while the previous block's P·V still reads P; l = l·α + Σ P̃ (thread part).
  __device__ __forceinline__ static void exp_pass(uint32_t (&S)[kRegs], float sc, const float (&m)[2],
                                                  const float (&alpha)[2], float (&l)[2]) {
    float cst[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) cst[i] = -kMagicF * sc - m[i] + kLog2Scale;
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int g = 0; g < N / 8; ++g) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int idx = 4 * g + 2 * i + c;
          // One FFMA: the bias folded into cst costs half an ulp of 1.5*2^23*scale in the argument
          // (~6e-5 for Gaussian inputs); exact, with one FADD more per score, measured 3 % slower.
          float x = fmaf(__uint_as_float(S[idx]), sc, cst[i]);
          if (MASK && S[idx] == 0u) x = -INFINITY;
          const float e = ex2(x);
          sum[i] += e;
          S[idx] = __float_as_uint(e);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) l[i] = l[i] * alpha[i] + sum[i];
  }
  // Pass 3, once the previous P·V has finished reading P: P̃ (in S) packed into P·V's A fragments.
  __device__ __forceinline__ static void pack(const uint32_t (&S)[kRegs], uint32_t (&P)[kSlices][4]) {
    auto f = [&](int i) { return __uint_as_float(S[i]); };
    if constexpr (kE4M3) {
#pragma unroll
      for (int kk = 0; kk < kSlices; ++kk) {
        const int b = 16 * kk;
        P[kk][0] = pack_e4m3x4(f(b + 0), f(b + 1), f(b + 4), f(b + 5));
        P[kk][1] = pack_e4m3x4(f(b + 2), f(b + 3), f(b + 6), f(b + 7));
        P[kk][2] = pack_e4m3x4(f(b + 8), f(b + 9), f(b + 12), f(b + 13));
        P[kk][3] = pack_e4m3x4(f(b + 10), f(b + 11), f(b + 14), f(b + 15));
      }
    } else {
      // The f16 A fragment of keys 16kk..16kk+15 is the S accumulator's layout of those columns
      // (rows r / r+8, keys 2q, 2q+1 and 8+2q, 9+2q): no permutation.
#pragma unroll
      for (int kk = 0; kk < kSlices; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) P[kk][r] = pack_half2(f(8 * kk + 2 * r), f(8 * kk + 2 * r + 1));
    }
  }
};

// e4m3 P·V of one block: k32 slice kk reads its 32 tokens of Vᵀ sub-tile kk / (SUB / 32). A fresh
// tile (scale-d 0 on the first slice): fp32 (FP8) or f16x2 (FP8_ACC16, rounded after each slice).
template <int D, int SUB, int SLICES, typename Acc, int NACC>
__device__ __forceinline__ void issue_pv_e4m3(Acc (&acc)[NACC], const uint32_t (&P)[SLICES][4], uint32_t sv) {
  constexpr int kPer = SUB / 32;
#pragma unroll
  for (int kk = 0; kk < SLICES; ++kk) {
    const uint64_t dv = smem_desc<SUB>(sv + (kk / kPer) * D * SUB) + 2 * (kk % kPer);
    if constexpr (std::is_same_v<Acc, float>) {  // fp32
      if constexpr (D == 128) wgmma_e4m3_m64n128k32(acc, P[kk], dv, kk > 0);
      else wgmma_e4m3_m64n64k32(acc, P[kk], dv, kk > 0);
    } else {  // f16x2
      if constexpr (D == 128) wgmma_e4m3_m64n128k32_f16(acc, P[kk], dv, kk > 0);
      else wgmma_e4m3_m64n64k32_f16(acc, P[kk], dv, kk > 0);
    }
  }
}

// Accurate mode: O += P·V over the block's k16 slices; Vᵀ in sub-tiles of 64 tokens (128-byte rows),
// slices 4t .. 4t+3 on sub-tile t.
template <int D, int SLICES>
__device__ __forceinline__ void issue_pv_f16(float (&O)[D / 2], const uint32_t (&P)[SLICES][4], uint32_t sv) {
  static_assert(SLICES % 4 == 0, "whole 64-token sub-tiles");
#pragma unroll
  for (int kk = 0; kk < SLICES; ++kk) {
    const uint64_t dv = smem_desc<128>(sv + (kk / 4) * D * 128) + 2 * (kk % 4);
    if constexpr (D == 128) wgmma_f16_m64n128k16(O, P[kk], dv);
    else wgmma_f16_m64n64k16(O, P[kk], dv);
  }
}

template <int D, int N>
__device__ __forceinline__ void issue_qk(uint32_t (&S)[N / 2], uint64_t dq, uint32_t sk) {
  const uint64_t dk = smem_desc<D>(sk);
#pragma unroll
  for (int kk = 0; kk < D / 32; ++kk) {
    if constexpr (N == 192) wgmma_s8_m64n192k32(S, dq + 2 * kk, dk + 2 * kk);
    else wgmma_s8_m64n128k32(S, dq + 2 * kk, dk + 2 * kk);
  }
}

template <int D, PV MODE>
__global__ void __launch_bounds__(kThreads, 1)
attn_sm90_kernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK,
                 const __grid_constant__ CUtensorMap tmV, const __grid_constant__ AttnParams p) {
#if CS_SM90_DEVICE
  using L = SmemLayout<D, MODE>;
  constexpr bool kE4M3 = MODE != PV::FP16;  // P·V on e4m3 into a fresh tile folded into O (FP8, FP8_ACC16)
  constexpr bool kH16 = MODE == PV::FP8_ACC16;  // that tile in f16x2
  constexpr int kBlockN = L::kBlockN, kStages = L::kStages, kSRegs = kBlockN / 2;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = base + L::q_off, sK = base + L::k_off, sV = base + L::v_off, bars = base + L::bar_off;
  const uint32_t bar_q = bars;
  auto full_k = [&](int s) { return bars + 8u * (1 + s); };
  auto empty_k = [&](int s) { return bars + 8u * (1 + kStages + s); };
  auto full_v = [&](int s) { return bars + 8u * (1 + 2 * kStages + s); };
  auto empty_v = [&](int s) { return bars + 8u * (1 + 3 * kStages + s); };

  const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int m_tile = p.causal ? (p.n_mtiles - 1 - static_cast<int>(blockIdx.x)) : static_cast<int>(blockIdx.x);
  const int bh = blockIdx.y;
  const int b = bh / p.Hq, h = bh % p.Hq;
  const int bhk = b * p.Hkv + h / p.group;
  const int m0 = m_tile * kBlockM;
  int n_blocks = (p.Lk + kBlockN - 1) / kBlockN;
  if (p.causal) n_blocks = min(n_blocks, min(m0 + kBlockM, p.Lq) / kBlockN + ((min(m0 + kBlockM, p.Lq) % kBlockN) != 0));

  if (threadIdx.x == 0) {
    mbar_init(bar_q, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full_k(s), 1);
      mbar_init(full_v(s), 1);
      mbar_init(empty_k(s), 8);  // lane 0 of each consumer warp
      mbar_init(empty_v(s), 8);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------- producer ----------------
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      prefetch_tmap(&tmQ);
      prefetch_tmap(&tmK);
      prefetch_tmap(&tmV);
      mbar_expect_tx(bar_q, L::q_bytes);
      tma_load_3d(sQ, &tmQ, bar_q, 0, m0, bh);
      for (int j = 0; j < n_blocks; ++j) {
        const int s = j % kStages;
        const uint32_t ph = (j / kStages) & 1;
        mbar_wait(empty_k(s), ph ^ 1);
        mbar_expect_tx(full_k(s), L::k_bytes);
        tma_load_3d(sK + s * L::k_bytes, &tmK, full_k(s), 0, j * kBlockN, bhk);
        mbar_wait(empty_v(s), ph ^ 1);
        mbar_expect_tx(full_v(s), L::v_bytes);
#pragma unroll
        for (int t = 0; t < L::n_sub; ++t)  // coordinates in bytes, one box per sub-tile
          tma_load_3d(sV + s * L::v_bytes + t * L::v_sub, &tmV, full_v(s), L::kVB * j * kBlockN + t * L::kSubRow, 0, bhk);
      }
    }
    return;
  }

  // ---------------- consumers ----------------
  setmaxnreg_inc<240>();
  const int cw = wg - 1;
  const int tid = threadIdx.x & 127, warp = tid >> 5, lane = tid & 31;
  const int row0 = m0 + 64 * cw + 16 * warp + (lane >> 2);  // this thread's rows: row0, row0 + 8
  const int q16 = (m0 + 64 * cw + 16 * warp) / kQRows;
  const float qs = (q16 * kQRows < p.Lq)
                       ? p.q_scale[static_cast<int64_t>(bh) * p.q_spr + q16 * 8 + (lane >> 2)] * p.sm_scale_log2
                       : 0.f;
  const float* ks_ptr = p.k_scale + static_cast<int64_t>(bhk) * p.k_spr + (lane & 3);
  const uint64_t dq = smem_desc<D>(sQ + cw * 64 * D);
  // Blocks from here on need masking (sequence end, causal diagonal of this warpgroup's rows).
  const int first_masked = p.causal ? min(p.Lk / kBlockN, (m0 + 64 * cw) / kBlockN) : p.Lk / kBlockN;

  using SoftmaxM = Softmax<true, MODE, kBlockN>;
  using SoftmaxU = Softmax<false, MODE, kBlockN>;
  constexpr int kSlices = SoftmaxU::kSlices;
  uint32_t S[kSRegs];
  float O[D / 2];
  // The fresh per-block tile of the e4m3 modes: fp32 (FP8) or f16x2 (FP8_ACC16: element i in half i % 2 of
  // register i / 2, the f32 fragment's order); unused (one register) in the accurate mode.
  using AccT = std::conditional_t<kH16, uint32_t, float>;
  AccT Of[!kE4M3 ? 1 : kH16 ? D / 4 : D / 2];
  uint32_t P[kSlices][4];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2], alpha_pend[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 2; ++i) O[i] = 0.f;

  // One K scale per thread and block, loaded a block ahead: a load issued beside the Q·Kᵀ it
  // scales sat between that wait and the row max (3.7 % of the time at 1×40×32760×128, NOTES v8).
  float ks_next = __ldg(ks_ptr);
  auto scale_of_block = [&](int j) {  // called for j = 0, 1, 2, ... in order
    const float sc = qs * ks_next;
    ks_next = __ldg(ks_ptr + 4 * min(j + 1, n_blocks - 1));
    return sc;
  };
  auto softmax = [&](int j, float sc) {
    if (j >= first_masked) {
      SoftmaxM::max_pass(S, sc, m, alpha, j * kBlockN + 2 * (lane & 3), row0, p.Lk, p.causal);
    } else {
      SoftmaxU::max_pass(S, sc, m, alpha, 0, 0, 0, 0);
    }
  };
  auto exps = [&](int j, float sc) {
    if (j >= first_masked) SoftmaxM::exp_pass(S, sc, m, alpha, l);
    else SoftmaxU::exp_pass(S, sc, m, alpha, l);
  };
  // e4m3: O = O·α(j-1) + O'(j-1). FP16: P(j-1)·V went into O itself; bring O to this block's max.
  auto fold = [&]() {
    if constexpr (kH16) {
#pragma unroll
      for (int r = 0; r < D / 4; ++r) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&Of[r]));
        O[2 * r] = fmaf(O[2 * r], alpha_pend[r & 1], f.x);
        O[2 * r + 1] = fmaf(O[2 * r + 1], alpha_pend[r & 1], f.y);
      }
    } else {
#pragma unroll
      for (int i = 0; i < D / 2; ++i) {
        if constexpr (kE4M3) O[i] = fmaf(O[i], alpha_pend[(i >> 1) & 1], Of[i]);
        else O[i] *= alpha[(i >> 1) & 1];
      }
    }
  };
  auto fence_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < kSlices; ++kk) reg_fence(P[kk]);
  };
  // P·V of one block into the fresh tile (e4m3 modes) or O itself (accurate mode).
  auto issue_pv = [&](uint32_t sv) {
    if constexpr (kE4M3) issue_pv_e4m3<D, L::kSubRow>(Of, P, sv);
    else issue_pv_f16<D>(O, P, sv);
  };
  auto fence_acc = [&]() {
    if constexpr (kE4M3) reg_fence(Of);
    else reg_fence(O);
  };

  mbar_wait(bar_q, 0);

  {  // block 0: Q·K(0)ᵀ alone
    const float sc = scale_of_block(0);
    mbar_wait(full_k(0), 0);
#pragma unroll
    for (int i = 0; i < kSRegs; ++i) S[i] = kMagicBits;
    reg_fence(S);
    wgmma_fence();
    issue_qk<D, kBlockN>(S, dq, sK);
    wgmma_commit();
    wgmma_wait<0>();
    reg_fence(S);
    if (lane == 0) mbar_arrive(empty_k(0));
    softmax(0, sc);
    exps(0, sc);
    SoftmaxU::pack(S, P);
    alpha_pend[0] = alpha[0];
    alpha_pend[1] = alpha[1];
  }
  for (int j = 1; j < n_blocks; ++j) {
    const int s = j % kStages, sp = (j - 1) % kStages;
    const float sc = scale_of_block(j);
    mbar_wait(full_k(s), (j / kStages) & 1);
    mbar_wait(full_v(sp), ((j - 1) / kStages) & 1);
#pragma unroll
    for (int i = 0; i < kSRegs; ++i) S[i] = kMagicBits;
    reg_fence(S);
    fence_p();
    wgmma_fence();
    issue_qk<D, kBlockN>(S, dq, sK + s * L::k_bytes);
    wgmma_commit();
    issue_pv(sV + sp * L::v_bytes);
    wgmma_commit();
    wgmma_wait<1>();
    reg_fence(S);
    if (lane == 0) mbar_arrive(empty_k(s));
    softmax(j, sc);
    exps(j, sc);  // under P(j-1)·V: S holds P̃(j) until the pack below
    wgmma_wait<0>();
    fence_acc();
    fence_p();
    if (lane == 0) mbar_arrive(empty_v(sp));
    fold();
    SoftmaxU::pack(S, P);
    alpha_pend[0] = alpha[0];
    alpha_pend[1] = alpha[1];
  }
  {  // the last block's P·V
    const int sp = (n_blocks - 1) % kStages;
    mbar_wait(full_v(sp), ((n_blocks - 1) / kStages) & 1);
    fence_p();
    wgmma_fence();
    issue_pv(sV + sp * L::v_bytes);
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc();
    fence_p();
    if (lane == 0) mbar_arrive(empty_v(sp));
    if constexpr (kE4M3) fold();  // FP16: the last P·V is in O already, at the final max
  }

  // ---------------- epilogue: O · v_scale / l, lse ----------------
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  const float inv[2] = {l[0] > 0.f ? 1.f / l[0] : 0.f, l[1] > 0.f ? 1.f / l[1] : 0.f};
  // The head's indices again from blockIdx: kept live across the main loop they cost the accurate-
  // 192 and FP8_ACC16 tiles two registers of spill.
  const int bh_e = ctaid_y(), b_e = bh_e / p.Hq, h_e = bh_e % p.Hq, bhk_e = b_e * p.Hkv + h_e / p.group;
  const float* vs = p.v_scale + static_cast<int64_t>(bhk_e) * D + 2 * (lane & 3);  // e4m3 modes only
  char* obase = static_cast<char*>(p.o) + 2 * (static_cast<int64_t>(b_e) * p.o_sb + static_cast<int64_t>(h_e) * p.o_sh);
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const float2 v2 = kE4M3 ? __ldg(reinterpret_cast<const float2*>(vs + 8 * j)) : make_float2(1.f, 1.f);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = row0 + 8 * i;
      if (row < p.Lq) {
        const float a = O[4 * j + 2 * i] * v2.x * inv[i], c = O[4 * j + 2 * i + 1] * v2.y * inv[i];
        char* dst = obase + 2 * (static_cast<int64_t>(row) * p.o_sn + 8 * j + 2 * (lane & 3));
        if (p.out_bf16) *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, c);
        else *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(a, c);
      }
    }
  }
  if (p.lse != nullptr && (lane & 3) == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = row0 + 8 * i;
      if (row < p.Lq) {
        const int64_t at = static_cast<int64_t>(bh_e) * p.Lq + row;
        float v = (m[i] + __log2f(l[i])) * kLn2 - (kE4M3 ? kLnP : 0.f);
        if (p.lse_corr) v += p.lse_corr[at];
        p.lse[at] = v;
      }
    }
  }
#endif
}

}}  // namespace cs::sm90
