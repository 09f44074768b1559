// Quantization passes of the Hopper family, each writing the layout the attention kernel's TMA
// reads (no padding copies: the kernel's tensor maps zero-fill rows past the sequence end).
//   kv_stats:  per chunk of tokens, partial sums of K and partial max |V| per channel;
//              the last CTA of a head (atomic ticket) folds them, in chunk order, into mean(K)
//              and the V channel scales, so the result does not depend on scheduling.
//   quant_q:   Q -> int8 (B*Hq, Lq, D), one scale per (16-row tile, row % 8) in every granularity
//              (coarser ones write their shared scale into each slot), + the lse correction.
//   quant_kv:  K - mean -> int8 (B*Hkv, Lk, D), one scale per (key_block, (token % 8) / 2);
//              V / scale -> e4m3, transposed to (B*Hkv, D, L_pad), tokens permuted within 16;
//              or (accurate mode) V -> f16 unscaled, transposed, tokens in order.
// Rounding follows the reference (quant.py): scale = amax / qmax with a true division, values
// x / scale rounded to nearest even and saturated; FP8 by cvt.rn.satfinite.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "common/amax.cuh"
#include "sm90/params.h"
#include "sm90/ptx.cuh"

namespace cs { namespace sm90 {

constexpr int kGranThread = 0, kGranWarp = 1, kGranBlock = 2;  // cs::Gran values

// Position of token t (within its 16) in the kernel's P fragment order (kernel.cuh).
__host__ __device__ constexpr int vt_pos(int t) {
  return (t & ~15) | (4 * ((t & 7) >> 1) + (t & 1) + 2 * ((t >> 3) & 1));
}

__device__ __forceinline__ void load8(const void* base, int64_t off, int bf16, float (&v)[8]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(static_cast<const char*>(base) + 2 * off));
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f;
    if (bf16) f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
    else f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ uint32_t pack_s8x4(float a, float b, float c, float d, float scale, float inv) {
  auto q = [&](float x) { return static_cast<uint32_t>(static_cast<uint8_t>(quant_s8(x, scale, inv))); };
  return q(a) | (q(b) << 8) | (q(c) << 16) | (q(d) << 24);
}

__device__ __forceinline__ float warp_max(float v, int width_mask) {
  for (int o = 1; o <= width_mask; o <<= 1) v = fmax_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// grid (n_chunks, B*Hkv, 1), 256 threads.
template <int D>
__global__ void __launch_bounds__(256) kv_stats_kernel(KVStatsParams p, unsigned* tickets) {
#if CS_SM90_DEVICE
  constexpr int C16 = D / 8;          // 16-byte chunks per row
  constexpr int RL = 256 / C16;       // rows in flight
  __shared__ float sk[RL][D], sv[RL][D];
  __shared__ bool last;
  const int bhk = blockIdx.y, b = bhk / p.H, h = bhk % p.H;
  const int c16 = threadIdx.x % C16, rl = threadIdx.x / C16;
  float ks[8] = {}, vm[8] = {};
  const int n_end = min(p.L, (blockIdx.x + 1) * p.chunk);
  const int64_t kb = static_cast<int64_t>(b) * p.ksb + static_cast<int64_t>(h) * p.ksh + 8 * c16;
  const int64_t vb = static_cast<int64_t>(b) * p.vsb + static_cast<int64_t>(h) * p.vsh + 8 * c16;
  for (int n = blockIdx.x * p.chunk + rl; n < n_end; n += RL) {
    float k[8], v[8];
    load8(p.k, kb + n * p.ksn, p.in_bf16, k);
    load8(p.v, vb + n * p.vsn, p.in_bf16, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      ks[i] += k[i];
      vm[i] = fmax_nan(vm[i], fabsf(v[i]));
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sk[rl][8 * c16 + i] = ks[i];
    sv[rl][8 * c16 + i] = vm[i];
  }
  __syncthreads();
  const int64_t part = (static_cast<int64_t>(bhk) * p.n_chunks + blockIdx.x) * D;
  if (threadIdx.x < D) {
    float s = 0.f, mx = 0.f;
    for (int r = 0; r < RL; ++r) {
      s += sk[r][threadIdx.x];
      mx = fmax_nan(mx, sv[r][threadIdx.x]);
    }
    p.part_k[part + threadIdx.x] = s;
    p.part_v[part + threadIdx.x] = mx;
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(tickets + bhk, 1u) == static_cast<unsigned>(p.n_chunks - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (threadIdx.x < D) {
    float s = 0.f, mx = 0.f;
    for (int c = 0; c < p.n_chunks; ++c) {
      const int64_t at = (static_cast<int64_t>(bhk) * p.n_chunks + c) * D + threadIdx.x;
      s += __ldcg(p.part_k + at);
      mx = fmax_nan(mx, __ldcg(p.part_v + at));
    }
    p.kmean[static_cast<int64_t>(bhk) * D + threadIdx.x] = p.smooth_k ? s / static_cast<float>(p.L) : 0.f;
    const float vs = scale_of(mx, p.v_max);
    p.v_scale[static_cast<int64_t>(bhk) * D + threadIdx.x] = vs;
    p.v_inv[static_cast<int64_t>(bhk) * D + threadIdx.x] = __frcp_rn(vs);
  }
  if (threadIdx.x == 0) tickets[bhk] = 0u;  // ready for the next call (the workspace keeps it)
#endif
}

// grid (ceil(Lq / 128), B*Hq), 256 threads: warp w quantizes rows 16w .. 16w+15 of the tile.
template <int D>
__global__ void __launch_bounds__(256) quant_q_kernel(QuantQParams p) {
#if CS_SM90_DEVICE
  constexpr int CH = D / 32;  // 16-byte chunks per lane per row
  __shared__ float warp_amax[8];
  const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, part = lane & 3;
  const int r16 = blockIdx.x * kQuantRowsQ + warp * kQRows;
  const int rows[2] = {r16 + g, r16 + g + 8};
  const int64_t xb = static_cast<int64_t>(b) * p.sb + static_cast<int64_t>(h) * p.sh;
  float v[2][CH][8];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (rows[i] < p.L) load8(p.x, xb + rows[i] * p.sn + 8 * (4 * c + part), p.in_bf16, v[i][c]);
      else
#pragma unroll
        for (int e = 0; e < 8; ++e) v[i][c][e] = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) amax = fmax_nan(amax, fabsf(v[i][c][e]));
    }
  amax = warp_max(amax, p.gran == kGranThread ? 2 : 16);
  if (p.gran == kGranBlock) {
    if (lane == 0) warp_amax[warp] = amax;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < 8; ++w) amax = fmax_nan(amax, warp_amax[w]);
  }
  const float scale = scale_of(amax, 127.f), inv = __frcp_rn(scale);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (rows[i] >= p.L) continue;
    int8_t* dst = p.out + (static_cast<int64_t>(bh) * p.L + rows[i]) * D;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const float* x = v[i][c];
      uint2 q;
      q.x = pack_s8x4(x[0], x[1], x[2], x[3], scale, inv);
      q.y = pack_s8x4(x[4], x[5], x[6], x[7], scale, inv);
      *reinterpret_cast<uint2*>(dst + 8 * (4 * c + part)) = q;
    }
  }
  if (r16 < p.L && part == 0) p.scale[static_cast<int64_t>(bh) * p.spr + (r16 / kQRows) * 8 + g] = scale;
  if (p.kmean != nullptr) {
    const float* km = p.kmean + static_cast<int64_t>(b * p.Hkv + h / p.group) * D;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < CH; ++c)
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = fmaf(v[i][c][e], km[8 * (4 * c + part) + e], dot);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      if (part == 0 && rows[i] < p.L) p.corr[static_cast<int64_t>(bh) * p.L + rows[i]] = p.sm_scale * dot;
    }
  }
#endif
}

// Shared memory of quant_kv: each token's K amax, then the Vᵀ tile (D rows of the block's tokens).
template <int D, PV MODE>
struct QuantKVSmem {
  static constexpr int kTokens = key_block(MODE);
  static constexpr int kVB = vt_bytes(MODE);
  static constexpr int vt_off = 4 * kTokens;           // a multiple of 16: the uint4 reads of Vᵀ rows
  static constexpr int bytes = vt_off + D * kTokens * kVB;  // 49920 for f16 at 192 keys: over the static 48 KB
};

// grid (ceil(Lk / N), B*Hkv), 4N threads (N = key_block(MODE)): one K scale block, 4 threads per token.
template <int D, PV MODE>
__global__ void __launch_bounds__(4 * key_block(MODE)) quant_kv_kernel(QuantKVParams p) {
#if CS_SM90_DEVICE
  using SM = QuantKVSmem<D, MODE>;
  constexpr int CH = D / 32;  // 16-byte chunks per thread
  constexpr int VB = SM::kVB, kKBlock = SM::kTokens;
  extern __shared__ __align__(16) uint8_t quant_kv_smem[];
  float* tok_amax = reinterpret_cast<float*>(quant_kv_smem);
  auto vt = reinterpret_cast<uint8_t(*)[kKBlock * VB]>(quant_kv_smem + SM::vt_off);
  const int bhk = blockIdx.y, b = bhk / p.H, h = bhk % p.H;
  const int t = threadIdx.x >> 2, part = threadIdx.x & 3;
  const int n = blockIdx.x * kKBlock + t;
  const bool valid = n < p.L;
  float k[CH][8];
  const int64_t kb = static_cast<int64_t>(b) * p.ksb + static_cast<int64_t>(h) * p.ksh + static_cast<int64_t>(n) * p.ksn;
  const int64_t vb = static_cast<int64_t>(b) * p.vsb + static_cast<int64_t>(h) * p.vsh + static_cast<int64_t>(n) * p.vsn;
  const float* km = p.kmean ? p.kmean + static_cast<int64_t>(bhk) * D : nullptr;
  const float* vs = p.v_scale + static_cast<int64_t>(bhk) * D;
  const float* vi = p.v_inv + static_cast<int64_t>(bhk) * D;
  // V first, one 16-byte chunk at a time, so that only K's chunks stay in registers until the scale:
  // e4m3 of v / scale into the transposed, permuted tile, or f16 of v transposed in order (768
  // threads of the 192-token tiles leave 80 registers per thread).
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int ch = 8 * (4 * c + part);
    float v[8];
    if (valid) {
      load8(p.v, vb + ch, p.in_bf16, v);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
    }
    if constexpr (MODE != PV::FP16) {  // e4m3
#pragma unroll
      for (int e = 0; e < 8; e += 4) {
        auto d = [&](int u) { return div_by(v[e + u], vs[ch + e + u], vi[ch + e + u]); };
        const uint32_t q = pack_e4m3x4(d(0), d(1), d(2), d(3));
#pragma unroll
        for (int u = 0; u < 4; ++u) vt[ch + e + u][vt_pos(t)] = static_cast<uint8_t>(q >> (8 * u));
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        *reinterpret_cast<__half*>(&vt[ch + e][2 * t]) = __float2half_rn(v[e]);
    }
  }
  float amax = 0.f;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int ch = 8 * (4 * c + part);
    if (valid) {
      load8(p.k, kb + ch, p.in_bf16, k[c]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) k[c][e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (km && valid) k[c][e] -= km[ch + e];
      amax = fmax_nan(amax, fabsf(k[c][e]));
    }
  }
  amax = warp_max(amax, 2);
  if (part == 0) tok_amax[t] = amax;
  __syncthreads();
  // K group amax: PER_THREAD over the 16 tokens with this token's (t % 8) / 2, else the block.
  float gmax = 0.f;
  if (p.gran == kGranThread) {
    const int g2 = (t & 7) >> 1;
#pragma unroll
    for (int a = 0; a < kKBlock / 8; ++a) gmax = fmax_nan(gmax, fmax_nan(tok_amax[8 * a + 2 * g2], tok_amax[8 * a + 2 * g2 + 1]));
  } else {
    for (int a = 0; a < kKBlock; ++a) gmax = fmax_nan(gmax, tok_amax[a]);
  }
  const float scale = scale_of(gmax, 127.f), inv = __frcp_rn(scale);
  if (valid) {
    int8_t* dst = p.k8 + (static_cast<int64_t>(bhk) * p.L + n) * D;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      uint2 q;
      q.x = pack_s8x4(k[c][0], k[c][1], k[c][2], k[c][3], scale, inv);
      q.y = pack_s8x4(k[c][4], k[c][5], k[c][6], k[c][7], scale, inv);
      *reinterpret_cast<uint2*>(dst + 8 * (4 * c + part)) = q;
    }
  }
  // tokens 0..3 hold the four groups' scales ((t % 8) / 2 = t / 2 for t < 8: tokens 0, 2, 4, 6)
  if (part == 0 && t < 8 && (t & 1) == 0) p.k_scale[static_cast<int64_t>(bhk) * p.spr + blockIdx.x * 4 + t / 2] = scale;
  // V^T rows: D rows of N (e4m3) or 2N (f16) bytes, 16 bytes per thread per pass.
  constexpr int kRowChunks = kKBlock * VB / 16;
  const int64_t pitch = static_cast<int64_t>(p.L_pad) * VB;
  uint8_t* vdst = p.vt + static_cast<int64_t>(bhk) * D * pitch + static_cast<int64_t>(blockIdx.x) * kKBlock * VB;
  for (int i = threadIdx.x; i < D * kRowChunks; i += 4 * kKBlock) {
    const int d = i / kRowChunks, c = i % kRowChunks;
    *reinterpret_cast<uint4*>(vdst + static_cast<int64_t>(d) * pitch + 16 * c) = *reinterpret_cast<const uint4*>(&vt[d][16 * c]);
  }
#endif
}

}}  // namespace cs::sm90
