// Tile traits of the mma.sync family, per kernel (w16: 16-row warps, every arch; w32: 32-row
// warps, sm_90) and arch: the quantization tiles the library reports (cs_query_tiles), the CTA
// shape, and the per-arch code-generation choices, each with the measurement behind it
// (NOTES.md). Host and device read the same constexpr functions, so the host launches only
// the CTA shape that was compiled for real on the arch.
#pragma once
#include "common/types.h"

namespace cs::mma_sync {

// Both kernels quantize with 128-row Q tiles, 16-row warp tiles (the m16 fragment that
// PER_WARP / PER_THREAD Q scales follow; a w32 warp reads one scale per m16 tile) and 64-key
// blocks, on every arch.
__host__ __device__ constexpr TileShape tiles(int /*head_dim*/, PV /*mode*/, int /*arch*/) {
  return TileShape{/*blk_q=*/128, /*warp_q=*/16, /*blk_k=*/64};
}

// Arches with ~100 KB of shared memory per SM (sm_86/87/89/120): there two 64-row FP16-V CTAs
// do not fit, so the 16-row kernel runs 128-row CTAs (one 4-warp CTA per SM would idle the SM);
// elsewhere (sm_80, sm_90: 164/228 KB) two 64-row CTAs per SM drift out of phase and overlap one
// another's softmax with MMAs (NOTES.md v3). Every mode uses one CTA shape per arch.
__host__ __device__ constexpr bool small_smem_arch(int arch) {
  return arch == 86 || arch == 87 || arch == 89 || arch >= 120;
}
__host__ __device__ constexpr int w16_cta_q(int arch) { return small_smem_arch(arch) ? 128 : 64; }

// The arch this translation unit is compiled for (0 in host code).
#if defined(__CUDA_ARCH__)
constexpr int kDeviceArch = __CUDA_ARCH__ / 10;
#else
constexpr int kDeviceArch = 0;
#endif

// Q·Kᵀ of the next block issued before the softmax of the current one (the 16-row kernel):
// on sm_90 FP8 mma.sync is lowered to HMMA (correctness only there) and pipelined it spills;
// sm_120a at D=128 spilled 4-28 B pipelined (fp8, int8, fp16-acc16).
__host__ __device__ constexpr bool w16_pipelined(int arch, int head_dim, PV mode) {
  return arch == 90 ? !pv_is_fp8(mode) : (arch >= 120 ? head_dim == 64 : true);
}

// int32 MMA accumulators start at kMagicI (convert.cuh) and convert with one FADD where the
// register file allows (sm_90: no spills); elsewhere they start at 0 (+ IADD kMagicI): the 32
// live constants spilled on sm_120a.
__host__ __device__ constexpr bool magic_acc_init(int arch) { return arch == 90; }

// The 16-row kernel's CTA: CTA_Q query rows (a 128-row quantization tile may be covered by two
// 64-row CTAs), 16-row warps, 64-key blocks, K and V double-buffered.
template <int D, PV MODE, int CTA_Q>
struct W16Cfg {
  static_assert(D == 64 || D == 128, "head_dim: the mma.sync kernels support 64 and 128");
  static constexpr TileShape T = tiles(D, MODE, 0);
  static constexpr int BLK_Q = CTA_Q, WARP_Q = T.warp_q, BLK_K = T.blk_k;
  static_assert(T.blk_q % CTA_Q == 0, "a CTA covers a whole number of CTAs per quantization tile");
  static_assert((BLK_Q == 128 || BLK_Q == 64) && WARP_Q == 16 && BLK_K == 64,
                "the fragment code assumes 64|128 / 16 / 64");
  // 255 registers x 128 threads x 2 CTAs fit the 64K register file without a min-CTAs hint (with
  // the hint, sm_120a spilled 12-44 B at D=128). INT8 P·V fits three 64-row CTAs on sm_90a (168
  // registers, no spills; FP16 P·V spilled 40-120 B, INT8 on sm_80 100 B): 12 warps per SM.
  static constexpr int MIN_CTAS = (BLK_Q == 64 && MODE == PV::INT8 && kDeviceArch == 90) ? 3 : 1;
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
  static constexpr bool PIPE = w16_pipelined(kDeviceArch, D, MODE);
  static constexpr int ACC_INIT = magic_acc_init(kDeviceArch) ? 0x4B400000 : 0;  // kMagicI or 0
};

// The 32-row-warp kernel's CTA: 128 rows = 4 warps x 32 rows (two m16 tiles per warp), 64-key
// blocks, two CTAs per SM (255 registers x 128 threads x 2 = the register file).
template <int D, PV MODE>
struct W32Cfg {
  static_assert(D == 64 || D == 128, "head_dim: the mma.sync kernels support 64 and 128");
  static_assert(MODE == PV::FP16 || MODE == PV::INT8, "32-row warps: FP16 and INT8 P·V");
  static constexpr TileShape T = tiles(D, MODE, 90);
  static_assert(T.blk_q == 128 && T.warp_q == 16 && T.blk_k == 64, "the fragment code assumes these tiles");
  static constexpr int BLK_Q = 128, WARP_Q = 32, THREADS = 128, BLK_K = 64;
  static constexpr int MT = 2, NS = BLK_K / 8, NO = D / 8, KQ = D / 32;
  static constexpr bool V8 = MODE == PV::INT8;
  static constexpr int QK_ROW = D;                   // bytes per Q/K row
  static constexpr int V_ROW = V8 ? BLK_K : 2 * D;   // bytes per V^T row (channel) / V row (token)
  static constexpr int V_ROWS = V8 ? D : BLK_K;
  static constexpr int Q_BYTES = BLK_Q * QK_ROW, K_BYTES = BLK_K * QK_ROW, V_BYTES = V_ROWS * V_ROW;
  static constexpr int ALIGN = 256;  // the XOR addressing of mainloop_w32.cuh needs 256-byte aligned buffers
  static constexpr int QS_BYTES = MT * THREADS * 4;  // the Q scales, parked in shared memory
  static constexpr int SMEM = Q_BYTES + 2 * (K_BYTES + V_BYTES) + QS_BYTES + ALIGN;
};

}  // namespace cs::mma_sync
