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
// quant_kv writes a quad of tokens {2k, 2k+1, 2k+8, 2k+9} as one word of Vᵀ: they must sit at
// four consecutive positions from vt_pos(2k), in that order.
constexpr bool vt_quads_are_words() {
  for (int k = 0; k < 4; ++k)
    if (vt_pos(2 * k) != 4 * k || vt_pos(2 * k + 1) != 4 * k + 1 || vt_pos(2 * k + 8) != 4 * k + 2 ||
        vt_pos(2 * k + 9) != 4 * k + 3)
      return false;
  return true;
}
static_assert(vt_quads_are_words(), "quant_kv's one-word Vᵀ stores follow vt_pos");

// A 16-byte chunk of 8 bf16/f16 values, loaded raw: the passes keep chunks packed (half the
// registers of floats, so more CTAs stay resident to keep loads in flight) and widen on use.
__device__ __forceinline__ uint4 ldg16(const void* base, int64_t off) {
  return __ldg(reinterpret_cast<const uint4*>(static_cast<const char*>(base) + 2 * off));
}

// The same load as a volatile asm: issued where it is written. ptxas otherwise sinks each load of an
// accumulating loop next to its use, one row in flight per thread (kv_stats: its chunks are short).
__device__ __forceinline__ uint4 ldg16_now(const void* base, int64_t off) {
  uint4 r;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(static_cast<const char*>(base) + 2 * off));
  return r;
}

__device__ __forceinline__ float elem(const uint4& raw, int e, int bf16) {
  const uint32_t w = e < 2 ? raw.x : e < 4 ? raw.y : e < 6 ? raw.z : raw.w;
  if (bf16) return __uint_as_float((e & 1) ? (w & 0xFFFF0000u) : (w << 16));
  return __half2float(__ushort_as_half(static_cast<unsigned short>((e & 1) ? (w >> 16) : (w & 0xFFFFu))));
}

// max |x| over a chunk's 8 values, on the bits: with the sign cleared, bf16 and f16 order like
// unsigned integers (NaN above inf, so a NaN still wins), two halves per instruction.
__device__ __forceinline__ float abs_max(const uint4& raw, int bf16) {
  const uint32_t m = __vmaxu2(__vmaxu2(raw.x & 0x7FFF7FFFu, raw.y & 0x7FFF7FFFu),
                              __vmaxu2(raw.z & 0x7FFF7FFFu, raw.w & 0x7FFF7FFFu));
  const uint32_t h = max(m & 0xFFFFu, m >> 16);
  return bf16 ? __uint_as_float(h << 16) : __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
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
  // Four rows per thread per step, loaded before any is summed: short chunks (image sizes) are
  // latency-bound. Rows past the chunk read as zeros, which change neither the sum nor the max.
  constexpr int U = 4;
  for (int n = blockIdx.x * p.chunk + rl; n < n_end; n += U * RL) {
    uint4 kr[U], vr[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool in = n + u * RL < n_end;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (in) {
        kr[u] = ldg16_now(p.k, kb + (n + u * RL) * p.ksn);
        vr[u] = ldg16_now(p.v, vb + (n + u * RL) * p.vsn);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        ks[i] += elem(kr[u], i, p.in_bf16);
        vm[i] = fmax_nan(vm[i], fabsf(elem(vr[u], i, p.in_bf16)));
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
  uint4 raw[2][CH];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int c = 0; c < CH; ++c)
      raw[i][c] = rows[i] < p.L ? ldg16(p.x, xb + rows[i] * p.sn + 8 * (4 * c + part)) : make_uint4(0, 0, 0, 0);
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int c = 0; c < CH; ++c) amax = fmax_nan(amax, abs_max(raw[i][c], p.in_bf16));
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
      auto x = [&](int e) { return elem(raw[i][c], e, p.in_bf16); };
      uint2 q;
      q.x = pack_s8x4(x(0), x(1), x(2), x(3), scale, inv);
      q.y = pack_s8x4(x(4), x(5), x(6), x(7), scale, inv);
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
        for (int e = 0; e < 8; ++e) dot = fmaf(elem(raw[i][c], e, p.in_bf16), km[8 * (4 * c + part) + e], dot);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      if (part == 0 && rows[i] < p.L) p.corr[static_cast<int64_t>(bh) * p.L + rows[i]] = p.sm_scale * dot;
    }
  }
#endif
}

// quant_kv's CTA: one key block (key_block(MODE) tokens); each thread one quad of tokens {2k, 2k+1,
// 2k+8, 2k+9} of a 16 (the four that share K scale group k = (token % 8) / 2 and, in e4m3, one
// 4-byte word of Vᵀ: positions 4k .. 4k+3, vt_pos) times one 16-byte chunk of channels.
// Shared memory: K's mean and V's scales for the head, the four K group maxima, then the Vᵀ tile,
// each row one word longer than its payload so that a warp's e4m3 quad writes fall in 32 banks (the
// f16 tile's two words per channel: 2-way).
template <int D, PV MODE>
struct QuantKVSmem {
  static constexpr int kTokens = key_block(MODE);
  static constexpr int kVB = vt_bytes(MODE);
  static constexpr int kRow = kTokens * kVB;        // Vᵀ payload bytes per channel row
  static constexpr int kPitch = kRow + 4;           // an odd number of words
  static constexpr int kThreads = kTokens * D / 32;  // (kTokens / 16 tiles) x (4 quads) x (D / 8 chunks)
  // Resident CTAs per SM asked of ptxas (40 registers at 768 threads, 42 at 512): one CTA's load
  // latency hides behind another's stores. The f16 tile's wider rows spill at 40.
  static constexpr int kMinBlocks = MODE == PV::FP16 ? 1 : (kThreads >= 768 ? 2 : 3);
  static constexpr int km_off = 0, vs_off = 4 * D, vi_off = 8 * D, gmax_off = 12 * D;
  static constexpr int vt_off = gmax_off + 16;
  static constexpr int bytes = vt_off + D * kPitch;
  static_assert((kPitch / 4) % 2 == 1 && kTokens % 32 == 0, "odd row pitch in words, whole warps of tiles");
  static_assert(D % 32 == 0 && kThreads <= 1024, "warps of 4 chunks x 4 quads x 2 tiles, one CTA per block");
};

// grid (ceil(Lk / N), B*Hkv), N·D/32 threads (N = key_block(MODE)).
template <int D, PV MODE>
__global__ void __launch_bounds__(QuantKVSmem<D, MODE>::kThreads, QuantKVSmem<D, MODE>::kMinBlocks) quant_kv_kernel(QuantKVParams p) {
#if CS_SM90_DEVICE
  using SM = QuantKVSmem<D, MODE>;
  constexpr int kKBlock = SM::kTokens, kCHi = D / 32;
  extern __shared__ __align__(16) uint8_t quant_kv_smem[];
  float* s_km = reinterpret_cast<float*>(quant_kv_smem + SM::km_off);
  float* s_vs = reinterpret_cast<float*>(quant_kv_smem + SM::vs_off);
  float* s_vi = reinterpret_cast<float*>(quant_kv_smem + SM::vi_off);
  unsigned* s_gmax = reinterpret_cast<unsigned*>(quant_kv_smem + SM::gmax_off);
  uint8_t* s_vt = quant_kv_smem + SM::vt_off;
  const int bhk = blockIdx.y, b = bhk / p.H, h = bhk % p.H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // lanes: 4 chunks x 4 quads x 2 tiles, so that (8 c P + 4 s + k) mod 32 covers the banks (e4m3)
  const int c = (warp % kCHi) * 4 + (lane & 3), k = (lane >> 2) & 3, s = (warp / kCHi) * 2 + (lane >> 4);
  const int ch = 8 * c, n0 = blockIdx.x * kKBlock + 16 * s + 2 * k;
  const int64_t kb = static_cast<int64_t>(b) * p.ksb + static_cast<int64_t>(h) * p.ksh + ch;
  const int64_t vb = static_cast<int64_t>(b) * p.vsb + static_cast<int64_t>(h) * p.vsh + ch;
  constexpr int kTok[4] = {0, 1, 8, 9};
  uint4 vr[4], kr[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int n = n0 + kTok[j];
    vr[j] = n < p.L ? ldg16(p.v, vb + n * p.vsn) : make_uint4(0, 0, 0, 0);
  }
  if (threadIdx.x < D) {
    const int64_t at = static_cast<int64_t>(bhk) * D + threadIdx.x;
    s_km[threadIdx.x] = p.kmean ? p.kmean[at] : 0.f;
    s_vs[threadIdx.x] = p.v_scale[at];
    s_vi[threadIdx.x] = p.v_inv[at];
  }
  if (threadIdx.x < 4) s_gmax[threadIdx.x] = 0u;
  __syncthreads();
  // V: e4m3 of v / scale, the quad's four tokens one word of its channel row; or f16 of v, tokens in order.
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    uint8_t* row = s_vt + (ch + e) * SM::kPitch;
    if constexpr (MODE != PV::FP16) {
      const float sc = s_vs[ch + e], inv = s_vi[ch + e];
      auto d = [&](int j) { return div_by(elem(vr[j], e, p.in_bf16), sc, inv); };
      *reinterpret_cast<uint32_t*>(row + 16 * s + vt_pos(2 * k)) = pack_e4m3x4(d(0), d(1), d(2), d(3));
    } else {
      auto f = [&](int j) { return elem(vr[j], e, p.in_bf16); };
      *reinterpret_cast<uint32_t*>(row + 2 * (16 * s + 2 * k)) = pack_half2(f(0), f(1));
      *reinterpret_cast<uint32_t*>(row + 2 * (16 * s + 2 * k + 8)) = pack_half2(f(2), f(3));
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int n = n0 + kTok[j];
    kr[j] = n < p.L ? ldg16(p.k, kb + n * p.ksn) : make_uint4(0, 0, 0, 0);
  }
  // K - mean: tokens past the end are zeros (not -mean), as the reference pads them.
  float km[8];
  *reinterpret_cast<float4*>(km) = *reinterpret_cast<const float4*>(s_km + ch);
  *reinterpret_cast<float4*>(km + 4) = *reinterpret_cast<const float4*>(s_km + ch + 4);
  auto kx = [&](int j, int e) { return n0 + kTok[j] < p.L ? elem(kr[j], e, p.in_bf16) - km[e] : 0.f; };
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 8; ++e) amax = fmax_nan(amax, fabsf(kx(j, e)));
  amax = fmax_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmax_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  amax = fmax_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 16));
  if ((lane & 0x13) == 0) atomicMax(s_gmax + k, __float_as_uint(amax));  // |x| and NaN order as unsigned
  __syncthreads();
  // K group amax: PER_THREAD over the group's tokens of the block, else over the block.
  const unsigned g = p.gran == kGranThread ? s_gmax[k] : max(max(s_gmax[0], s_gmax[1]), max(s_gmax[2], s_gmax[3]));
  const float scale = scale_of(__uint_as_float(g), 127.f), kinv = __frcp_rn(scale);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int n = n0 + kTok[j];
    if (n >= p.L) continue;
    uint2 q;
    q.x = pack_s8x4(kx(j, 0), kx(j, 1), kx(j, 2), kx(j, 3), scale, kinv);
    q.y = pack_s8x4(kx(j, 4), kx(j, 5), kx(j, 6), kx(j, 7), scale, kinv);
    *reinterpret_cast<uint2*>(p.k8 + (static_cast<int64_t>(bhk) * p.L + n) * D + ch) = q;
  }
  if (c == 0 && s == 0) p.k_scale[static_cast<int64_t>(bhk) * p.spr + blockIdx.x * 4 + k] = scale;
  // Vᵀ rows: D rows of kRow bytes, 16 bytes per thread per pass (four words: the pitch is odd).
  constexpr int kRowChunks = SM::kRow / 16;
  const int64_t pitch = static_cast<int64_t>(p.L_pad) * SM::kVB;
  uint8_t* vdst = p.vt + static_cast<int64_t>(bhk) * D * pitch + static_cast<int64_t>(blockIdx.x) * SM::kRow;
  for (int i = threadIdx.x; i < D * kRowChunks; i += SM::kThreads) {
    const int d = i / kRowChunks, q = i % kRowChunks;
    const uint32_t* src = reinterpret_cast<const uint32_t*>(s_vt + d * SM::kPitch + 16 * q);
    *reinterpret_cast<uint4*>(vdst + static_cast<int64_t>(d) * pitch + 16 * q) = make_uint4(src[0], src[1], src[2], src[3]);
  }
#endif
}

}}  // namespace cs::sm90
