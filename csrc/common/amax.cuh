// Quantization scales that keep a non-finite input visible. fmaxf drops NaN, and the int8/e4m3
// rounding of NaN or inf gives a finite code: a NaN or inf in Q, K or V would come out as a
// plausible, wrong output. Carried in the scale instead, it reaches every score or output
// channel the bad value touches, as it does in unquantized attention.
#pragma once

namespace cs {

// max(a, b), NaN if either is NaN (sm_80+).
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// amax / qmax; an all-zero group gets 1 (any scale reproduces its zeros); NaN and inf stay.
__device__ __forceinline__ float scale_of(float amax, float qmax) {
  return amax == 0.f ? 1.f : __fdiv_rn(amax, qmax);
}

// x / s rounded as __fdiv_rn rounds it, for many x over one s: the reciprocal once (inv = __frcp_rn(s)),
// then per x one multiply and one Markstein correction, q0 + (x − q0·s)·inv, instead of a MUFU.RCP
// and its fix-ups per division (the quantization passes were bound by those, not by memory).
// Correctly rounded while x/s and the residual stay normal: bit-identical to __fdiv_rn on 2e8 random
// pairs; where they differ (s = inf, or a denormal residual), both give the same int8/e4m3 code or a
// non-finite one.
__device__ __forceinline__ float div_by(float x, float s, float inv) {
  const float q0 = x * inv;
  return fmaf(fmaf(-q0, s, x), inv, q0);
}

}  // namespace cs
