// Fused quantization passes that feed the attention kernels (one pass over Q, one over K
// after a small mean reduction, one over V after a per-channel mean (V smoothing) and amax). Rounding follows
// comfy_sage/quant.py: scale = amax/qmax (1 for an all-zero group), q = rni(x / scale), saturated.
#include "quant/quant.h"
#include "common/amax.cuh"
#include "common/convert.cuh"
#include "mma_sync/traits.h"  // the key block FP8_ACC16's V target follows

namespace cs {

namespace {

constexpr int kQuantThreads = 256;

// Token mean, stage 1: partial sums over chunks of kMeanChunk tokens. grid (chunks, H, B), D threads.
__global__ void token_partial_sum_kernel(const void* x, int64_t sb, int64_t sh, int64_t sn, int bf16, int N, int D,
                                     float* partial) {
  const int b = blockIdx.z, h = blockIdx.y, ch = blockIdx.x, H = gridDim.y, nch = gridDim.x;
  const int d = threadIdx.x;
  const char* base = reinterpret_cast<const char*>(x) + ((int64_t)b * sb + (int64_t)h * sh) * 2;
  const int n0 = ch * kMeanChunk, n1 = min(N, n0 + kMeanChunk);
  float acc = 0.f;
  for (int n = n0; n < n1; ++n) {
    const char* e = base + ((int64_t)n * sn + d) * 2;
    acc += bf16 ? __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(e))
                : __half2float(*reinterpret_cast<const __half*>(e));
  }
  partial[((int64_t)(b * H + h) * nch + ch) * D + d] = acc;
}

// Token mean, stage 2: fixed-order sum of the partials (deterministic). grid (H, B), D threads.
__global__ void token_mean_kernel(const float* partial, int nch, int N, int D, float* mean) {
  const int bh = blockIdx.y * gridDim.x + blockIdx.x, d = threadIdx.x;
  float acc = 0.f;
  for (int c = 0; c < nch; ++c) acc += partial[((int64_t)bh * nch + c) * D + d];
  mean[(int64_t)bh * D + d] = acc / static_cast<float>(N);
}

// Q or K to int8 with one scale per group. grid (N_pad / tile_rows, H, B).
__global__ void __launch_bounds__(kQuantThreads) quant_int8_kernel(const __grid_constant__ QuantParams p) {
  __shared__ float s_amax[8];
  __shared__ float s_scale[8], s_inv[8];
  __shared__ float s_corr[128];
  const int b = blockIdx.z, h = blockIdx.y, tile = blockIdx.x;
  const int R = p.tile_rows, D = p.D, V = D / 8;
  const int n0 = tile * R;
  const int hk = h / p.head_group;
  if (threadIdx.x < 8) s_amax[threadIdx.x] = 0.f;
  if (threadIdx.x < 128) s_corr[threadIdx.x] = 0.f;
  __syncthreads();
  const char* base = reinterpret_cast<const char*>(p.x) + ((int64_t)b * p.sb + (int64_t)h * p.sh) * 2;
  const float* mean = p.mean ? p.mean + (int64_t)(b * p.H + h) * D : nullptr;
  const float* kmean = p.corr ? p.kmean + (int64_t)(b * (p.H / p.head_group) + hk) * D : nullptr;
  const int div = 8 / p.groups;  // group of row r: (r % 8) / div  -> 8, 4 or 1 groups
  for (int i = threadIdx.x; i < R * V; i += blockDim.x) {
    const int r = i / V, c = (i % V) * 8, n = n0 + r;
    if (n >= p.N) continue;  // padding rows are excluded from amax
    float v[8];
    load8(base + ((int64_t)n * p.sn + c) * 2, p.in_bf16, v);
    float amax = 0.f, dot = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (kmean) dot += v[e] * kmean[c + e];
      if (mean) v[e] = v[e] - mean[c + e];
      amax = fmax_nan(amax, fabsf(v[e]));
    }
    atomicMax(reinterpret_cast<unsigned int*>(&s_amax[(r % 8) / div]), __float_as_uint(amax));
    if (kmean) atomicAdd(&s_corr[r], dot);
  }
  __syncthreads();
  if (threadIdx.x < p.groups) {
    const float a = s_amax[threadIdx.x];
    const float sc = scale_of(a, 127.f);
    s_scale[threadIdx.x] = sc;
    s_inv[threadIdx.x] = __frcp_rn(sc);
    p.scale[((int64_t)(b * p.H + h) * (p.N_pad / R) + tile) * p.groups + threadIdx.x] = sc;
  }
  if (kmean && threadIdx.x < R && n0 + threadIdx.x < p.N)
    p.corr[(int64_t)(b * p.H + h) * p.N + n0 + threadIdx.x] = p.sm_scale * s_corr[threadIdx.x];
  __syncthreads();
  int8_t* out = p.out + ((int64_t)(b * p.H + h) * p.N_pad + n0) * D;
  for (int i = threadIdx.x; i < R * V; i += blockDim.x) {
    const int r = i / V, c = (i % V) * 8, n = n0 + r;
    uint2 packed = make_uint2(0u, 0u);
    if (n < p.N) {
      float v[8];
      load8(base + ((int64_t)n * p.sn + c) * 2, p.in_bf16, v);
      const float sc = s_scale[(r % 8) / div], inv = s_inv[(r % 8) / div];
      uint32_t w[2] = {0u, 0u};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float x = mean ? v[e] - mean[c + e] : v[e];
        w[e / 4] |= (uint32_t)(uint8_t)quant_s8(x, sc, inv) << (8 * (e % 4));
      }
      packed = make_uint2(w[0], w[1]);
    }
    *reinterpret_cast<uint2*>(out + (int64_t)r * D + c) = packed;
  }
}

// V to fp16, (B, H, N_pad, D) contiguous, zero padding. grid (N_pad / 64, H, B).
__global__ void __launch_bounds__(kQuantThreads) v_to_f16_kernel(const void* x, int64_t sb, int64_t sh, int64_t sn,
                                                                  int bf16, int H, int N, int N_pad, int D, __half* out) {
  const int b = blockIdx.z, h = blockIdx.y, n0 = blockIdx.x * 64, V = D / 8;
  const char* base = reinterpret_cast<const char*>(x) + ((int64_t)b * sb + (int64_t)h * sh) * 2;
  __half* o = out + ((int64_t)(b * H + h) * N_pad + n0) * D;
  for (int i = threadIdx.x; i < 64 * V; i += blockDim.x) {
    const int r = i / V, c = (i % V) * 8, n = n0 + r;
    uint4 w = make_uint4(0u, 0u, 0u, 0u);
    if (n < N) {
      float v[8];
      load8(base + ((int64_t)n * sn + c) * 2, bf16, v);
      w = make_uint4(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]), pack_half2(v[4], v[5]), pack_half2(v[6], v[7]));
    }
    *reinterpret_cast<uint4*>(o + (int64_t)r * D + c) = w;
  }
}

// Per-channel amax of V (minus its mean, when smoothed) over chunks of tokens. grid (chunks, H, B),
// D threads; amax (B,H,D) zeroed first.
__global__ void v_amax_kernel(const void* x, int64_t sb, int64_t sh, int64_t sn, int bf16, int N, int D,
                              const float* vmean, unsigned int* amax) {
  const int b = blockIdx.z, h = blockIdx.y, H = gridDim.y, d = threadIdx.x;
  const char* base = reinterpret_cast<const char*>(x) + ((int64_t)b * sb + (int64_t)h * sh) * 2;
  const int n0 = blockIdx.x * kMeanChunk, n1 = min(N, n0 + kMeanChunk);
  const float mu = vmean ? vmean[(int64_t)(b * H + h) * D + d] : 0.f;
  float m = 0.f;
  for (int n = n0; n < n1; ++n) {
    const char* e = base + ((int64_t)n * sn + d) * 2;
    const float val = bf16 ? __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(e))
                           : __half2float(*reinterpret_cast<const __half*>(e));
    m = fmax_nan(m, fabsf(val - mu));
  }
  atomicMax(amax + (int64_t)(b * H + h) * D + d, __float_as_uint(m));  // non-negative floats order as uints
}

// Position q (0..15) of a 16-token group holds token perm16(q): the order in which the
// m16n8k32 A fragment built from the Q·Kᵀ accumulator presents P's keys (mma_sync/mainloop_w16.cuh).
__device__ __forceinline__ int perm16(int q) {
  const int t = q >> 2, i = q & 3;
  return (i >> 1) * 8 + 2 * t + (i & 1);
}

// V (minus its mean, when smoothed) to 8-bit, transposed to (B, H, D, N_pad) with tokens permuted
// within each 16. grid (N_pad/64, H, B). Padding tokens are 0 (their P is 0 too).
template <PV MODE>
__global__ void __launch_bounds__(kQuantThreads) v_quant_kernel(const void* x, int64_t sb, int64_t sh, int64_t sn,
                                                                int bf16, int H, int N, int N_pad, int D,
                                                                const float* vmean, const unsigned int* amax,
                                                                float* vscale, uint8_t* out) {
  __shared__ uint8_t tile[64][128 + 4];
  __shared__ float s_scale[128], s_inv[128];
  __shared__ float s_mean[128];
  const int b = blockIdx.z, h = blockIdx.y, n0 = blockIdx.x * 64, V = D / 8;
  constexpr float target = pv_v_target(MODE, mma_sync::tiles(0, MODE, 0).blk_k);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float a = __uint_as_float(amax[(int64_t)(b * H + h) * D + d]);
    const float sc = scale_of(a, target);
    s_scale[d] = sc;
    s_inv[d] = __frcp_rn(sc);
    s_mean[d] = vmean ? vmean[(int64_t)(b * H + h) * D + d] : 0.f;
    if (blockIdx.x == 0) {
      vscale[(int64_t)(b * H + h) * 2 * D + d] = sc;
      vscale[(int64_t)(b * H + h) * 2 * D + D + d] = s_mean[d];
    }
  }
  __syncthreads();
  const char* base = reinterpret_cast<const char*>(x) + ((int64_t)b * sb + (int64_t)h * sh) * 2;
  for (int i = threadIdx.x; i < 64 * V; i += blockDim.x) {
    const int r = i / V, c = (i % V) * 8, n = n0 + r;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (n < N) {
      load8(base + ((int64_t)n * sn + c) * 2, bf16, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] -= s_mean[c + e];
    }
#pragma unroll
    for (int e = 0; e < 8; e += 2) {
      const float a0 = div_by(v[e], s_scale[c + e], s_inv[c + e]);
      const float a1 = div_by(v[e + 1], s_scale[c + e + 1], s_inv[c + e + 1]);
      if constexpr (MODE == PV::INT8) {
        tile[r][c + e] = (uint8_t)(int8_t)max(-127, min(127, __float2int_rn(a0)));
        tile[r][c + e + 1] = (uint8_t)(int8_t)max(-127, min(127, __float2int_rn(a1)));
      } else {
        const uint16_t w = cvt_e4m3x2(a0, a1);
        tile[r][c + e] = (uint8_t)(w & 0xff);
        tile[r][c + e + 1] = (uint8_t)(w >> 8);
      }
    }
  }
  __syncthreads();
  uint8_t* o = out + (int64_t)(b * H + h) * D * N_pad + n0;
  for (int i = threadIdx.x; i < D * 16; i += blockDim.x) {  // 16 words of 4 positions per channel row
    const int d = i / 16, p0 = (i % 16) * 4;
    uint32_t w = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int pos = p0 + e;
      w |= (uint32_t)tile[(pos & ~15) + perm16(pos & 15)][d] << (8 * e);
    }
    *reinterpret_cast<uint32_t*>(o + (int64_t)d * N_pad + p0) = w;
  }
}

}  // namespace

cudaError_t launch_token_mean(const void* x, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int D,
                              float* partial, float* mean, cudaStream_t stream) {
  const int nch = ceil_div(N, kMeanChunk);
  token_partial_sum_kernel<<<dim3(nch, H, B), D, 0, stream>>>(x, sb, sh, sn, bf16, N, D, partial);
  token_mean_kernel<<<dim3(H, B), D, 0, stream>>>(partial, nch, N, D, mean);
  return cudaGetLastError();
}

cudaError_t launch_quant_int8(const QuantParams& p, cudaStream_t stream) {
  quant_int8_kernel<<<dim3(p.N_pad / p.tile_rows, p.H, p.B), kQuantThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_v_f16(const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int N_pad,
                         int D, void* out, cudaStream_t stream) {
  v_to_f16_kernel<<<dim3(N_pad / 64, H, B), kQuantThreads, 0, stream>>>(v, sb, sh, sn, bf16, H, N, N_pad, D,
                                                                        reinterpret_cast<__half*>(out));
  return cudaGetLastError();
}

cudaError_t launch_v_8bit(PV mode, const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N,
                          int N_pad, int D, const float* vmean, unsigned int* amax, float* vscale, void* out,
                          cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(amax, 0, sizeof(unsigned int) * B * H * D, stream);
  if (err != cudaSuccess) return err;
  v_amax_kernel<<<dim3(ceil_div(N, kMeanChunk), H, B), D, 0, stream>>>(v, sb, sh, sn, bf16, N, D, vmean, amax);
  const dim3 grid(N_pad / 64, H, B);
  uint8_t* o = reinterpret_cast<uint8_t*>(out);
  switch (mode) {
    case PV::INT8: v_quant_kernel<PV::INT8><<<grid, kQuantThreads, 0, stream>>>(v, sb, sh, sn, bf16, H, N, N_pad, D, vmean, amax, vscale, o); break;
    case PV::FP8: v_quant_kernel<PV::FP8><<<grid, kQuantThreads, 0, stream>>>(v, sb, sh, sn, bf16, H, N, N_pad, D, vmean, amax, vscale, o); break;
    case PV::FP8_ACC16: v_quant_kernel<PV::FP8_ACC16><<<grid, kQuantThreads, 0, stream>>>(v, sb, sh, sn, bf16, H, N, N_pad, D, vmean, amax, vscale, o); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace cs
