// Kernel parameter structs of every family (plain data, no torch), passed by value as
// __grid_constant__. The quantized operands are laid out by the quantization passes (quant/).
#pragma once
#include <cstdint>

namespace cs {

struct AttnParams {
  const int8_t* q8;       // (B, Hq, Lq_pad, D) int8, contiguous
  const float* q_scale;   // (B, Hq, q_scales_per_head)
  const int8_t* k8;       // (B, Hkv, Lk_pad, D) int8, K - mean(K)
  const float* k_scale;   // (B, Hkv, k_scales_per_head)
  const void* v;          // fp16 modes: (B, Hkv, Lk_pad, D) half; 8-bit modes: (B, Hkv, D, Lk_pad) bytes
  // 8-bit modes: (B, Hkv, 2, D): V's per-channel scale, then (INT8 P·V) the per-channel mean
  // subtracted before quantizing, which the epilogue adds back (zeros without V smoothing). One
  // pointer for both: a second one live through the main loop spilled on sm_90a.
  const float* v_scale;
  void* o;                // output, q's layout, strides in elements
  int64_t o_sb, o_sh, o_sn;
  int out_bf16;
  float* lse;             // (B, Hq, Lq) fp32 or null
  const float* lse_corr;  // (B, Hq, Lq) sm_scale * q.kmean or null
  int B, Hq, Hkv, Lq, Lk, Lq_pad, Lk_pad;
  int causal;
  float sm_scale_log2;    // sm_scale * log2(e), folded into the Q scale
  int q_scale_rows, q_groups, q_scales_per_head;
  int k_groups, k_scales_per_head;
};

struct QuantParams {
  const void* x;          // (B, H, N, D) by strides (elements), last dim contiguous
  int64_t sb, sh, sn;
  int in_bf16;
  int B, H, N, N_pad, D;
  int tile_rows, groups;  // scale tile rows and groups within it (1, 4 or 8)
  int8_t* out;            // (B, H, N_pad, D)
  float* scale;           // (B, H, N_pad / tile_rows * groups)
  const float* mean;      // (B, H, D) subtracted before quantizing (K smoothing), or null
  // lse correction for Q: corr[b, h, n] = sm_scale * q[b,h,n,:] . kmean[b, h / group, :]
  const float* kmean;
  float* corr;
  int head_group;
  float sm_scale;
};

}  // namespace cs
