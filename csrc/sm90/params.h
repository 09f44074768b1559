// Parameter structs of the Hopper family (plain data, passed by value as __grid_constant__).
// The tensor maps travel beside them (kernel.cuh); these hold everything else.
#pragma once
#include <cstdint>
#include "common/types.h"  // PV

namespace cs { namespace sm90 {

// Tiles of the attention kernel (kernel.cuh) and of the quantization it reads (quant.cuh).
constexpr int kBlockM = 128;    // query rows per CTA: two consumer warpgroups of 64 rows
constexpr int kThreads = 384;   // producer warpgroup + two consumer warpgroups
constexpr int kQRows = 16;      // Q scale tile: one wgmma warp's rows (PER_THREAD: 8 groups by row % 8)
constexpr int kQuantRowsQ = 128;  // Q rows per quantization CTA (= PER_BLOCK Q scale tile)
constexpr int kMaxStages = 3;   // K/V shared-memory ring depth where it fits (4: +1%, within noise; NOTES.md)

// Keys per main-loop step, per P·V mode: also the K scale block (PER_THREAD: 4 groups by (token % 8)
// / 2), the reference's softmax block, one quant_kv CTA, and V^T's zero padding. Every block costs a
// fixed ~150 instructions per warp (row-max shuffles, α, fences, barriers; NOTES v11), so wider is
// faster while the registers last (head dim 128, per consumer thread): FP16 holds O 64 + S 96 + P 48
// = 208 at 192 keys, FP8_ACC16 O 64 + O' 32 (f16x2) + S 96 + P 24 = 216; FP8's fp32 fresh tile O'
// takes 64, so it stays at 128 (O 64 + O' 64 + S 64 + P 16 = 208).
__host__ __device__ constexpr int key_block(PV mode) { return mode == PV::FP8 ? 128 : 192; }

// Bytes per Vᵀ element: e4m3 (FP8, FP8_ACC16) or f16 (the accurate mode).
__host__ __device__ constexpr int vt_bytes(PV mode) { return mode == PV::FP16 ? 2 : 1; }

struct AttnParams {
  const float* q_scale;   // (B*Hq, q_spr): one scale per (16-row tile, row % 8), any granularity expanded
  const float* k_scale;   // (B*Hkv, k_spr): one scale per (key_block, (token % 8) / 2)
  const float* v_scale;   // (B*Hkv, D): per channel, max|V| / 448
  const float* lse_corr;  // (B*Hq, Lq): sm_scale * q . mean(K), or null
  void* o;                // output, q's layout: strides in elements
  int64_t o_sb, o_sh, o_sn;
  float* lse;             // (B, Hq, Lq) fp32 or null
  int Hq, Hkv, group, Lq, Lk;
  int q_spr, k_spr;
  int n_mtiles;
  int causal;
  int out_bf16;
  float sm_scale_log2;    // sm_scale * log2(e)
};

struct QuantQParams {
  const void* x;          // (B, Hq, Lq, D) by strides in elements, last dim contiguous
  int64_t sb, sh, sn;
  int in_bf16, H, L, spr, gran;
  int8_t* out;            // (B*Hq, Lq, D)
  float* scale;           // (B*Hq, spr)
  const float* kmean;     // (B*Hkv, D) or null: then no lse correction
  float* corr;            // (B*Hq, Lq)
  int group, Hkv;
  float sm_scale;
};

struct KVStatsParams {
  const void* k; const void* v;
  int64_t ksb, ksh, ksn, vsb, vsh, vsn;
  int in_bf16, H, L, chunk, n_chunks;
  float* part_k;          // (B*Hkv, n_chunks, D) partial sums of K
  float* part_v;          // (B*Hkv, n_chunks, D) partial max |V|
  float* kmean;           // (B*Hkv, D)
  float* v_scale;         // (B*Hkv, D)
  float* v_inv;           // (B*Hkv, D): 1 / v_scale, for quant_kv's divisions (common/amax.cuh div_by)
  float v_max;            // what max|V| maps to (common/types.h pv_v_target)
  int smooth_k;
};

struct QuantKVParams {
  const void* k; const void* v;
  int64_t ksb, ksh, ksn, vsb, vsh, vsn;
  int in_bf16, H, L, L_pad, spr, gran;
  const float* kmean;     // or null (no smoothing)
  const float* v_scale;
  const float* v_inv;
  int8_t* k8;             // (B*Hkv, Lk, D)
  float* k_scale;         // (B*Hkv, spr)
  uint8_t* vt;            // (B*Hkv, D, L_pad) e4m3, tokens permuted within 16 (kernel.cuh)
};

}}  // namespace cs::sm90
