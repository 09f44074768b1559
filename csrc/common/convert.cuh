// Numeric conversions that must round exactly like the reference (comfy_sage/quant.py).
#pragma once
#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "common/amax.cuh"

namespace cs {

// Two floats to a half2 register (x0 in the low half: the lower k index).
__device__ __forceinline__ uint32_t pack_half2(float x0, float x1) {
  __half2 h = __floats2half2_rn(x0, x1);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Integer <-> float through the fp32 mantissa ("magic number"), full-rate ALU instead of the
// quarter-rate I2F/F2I conversion pipe (which shares its 16/clk/SM budget with the exp2 unit).
// 0x4B400000 is 1.5*2^23: for |x| < 2^22 the bit pattern kMagicI + x *is* the float 1.5*2^23 + x,
// so an int32 MMA result converts with an IADD and one exact FADD. (Starting the accumulators at
// kMagicI saves the IADD but keeps 32 more registers live: it spilled on sm_120a.)
constexpr int kMagicI = 0x4B400000;
constexpr float kMagicF = 12582912.f;
__device__ __forceinline__ float magic_to_float(int biased) { return __int_as_float(biased) - kMagicF; }

// Four values x in [0, 255.5) to round(x) as u8 (round to nearest even, as torch.round), x0 in
// byte 0: the FADD rounds into the mantissa's low byte, two PRMTs gather the bytes.
__device__ __forceinline__ uint32_t pack_u8x4_rn(float x0, float x1, float x2, float x3) {
  const uint32_t b0 = __float_as_uint(__fadd_rn(x0, kMagicF)), b1 = __float_as_uint(__fadd_rn(x1, kMagicF));
  const uint32_t b2 = __float_as_uint(__fadd_rn(x2, kMagicF)), b3 = __float_as_uint(__fadd_rn(x3, kMagicF));
  const uint32_t lo = __byte_perm(b0, b1, 0x0040), hi = __byte_perm(b2, b3, 0x0040);
  return __byte_perm(lo, hi, 0x5410);
}

// Base-2 exponential on the MUFU unit, flush-to-zero (exp2f under --use_fast_math is the same).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// cvt.rn.satfinite.e4m3x2.f32 d, a, b puts a in the high byte and b in the low byte.
__device__ __forceinline__ uint16_t cvt_e4m3x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
#else
  __trap();
  return 0;
#endif
}

__device__ __forceinline__ uint32_t pack_e4m3x4(float x0, float x1, float x2, float x3) {
  return uint32_t(cvt_e4m3x2(x0, x1)) | (uint32_t(cvt_e4m3x2(x2, x3)) << 16);
}

// Symmetric int8: round to nearest even of x/scale (rounded as true division, like the reference:
// common/amax.cuh div_by with inv = __frcp_rn(scale)), saturated.
__device__ __forceinline__ int8_t quant_s8(float x, float scale, float inv) {
  const int q = __float2int_rn(div_by(x, scale, inv));
  return static_cast<int8_t>(max(-127, min(127, q)));
}

__device__ __forceinline__ void load8(const void* p, int bf16, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (bf16) {
      const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
      const float2 f = __bfloat1622float2(h);
      out[2 * i] = f.x; out[2 * i + 1] = f.y;
    } else {
      const __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
      const float2 f = __half22float2(h);
      out[2 * i] = f.x; out[2 * i + 1] = f.y;
    }
  }
}

}  // namespace cs
