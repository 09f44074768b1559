// Online softmax of mma.sync score tiles (both kernels of the family), in base-2 units.
#pragma once
#include "common/convert.cuh"

namespace cs::mma_sync {

// The four lanes that hold one accumulator row (lanes 4g..4g+3) combine their values.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// One row half hf (rows g + 8*hf) of an m16 x (8*NS) score tile s, whose base-2 logits are
// s * f (f > 0 and shared by this thread's scores, so max(s) * f = max(s * f); the 16-row kernel
// passes scaled scores and f = 1, which the compiler folds away). Replaces s by P * 2^ps_log2 =
// exp2(s*f - m + ps_log2) (8-bit P: the static P scale folded into the exponent), updates the
// running max m_run and this thread's partial row sum l_run (of P * 2^ps_log2), and returns
// alpha = exp2(m_old - m_new), O's rescale factor; raised is set when the max rose.
template <int NS>
__device__ __forceinline__ float online_softmax(float (&s)[NS][4], int hf, float f, float ps_log2, float& m_run,
                                                float& l_run, bool& raised) {
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < NS; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
  mx = quad_max(mx * f);
  const float m_new = fmaxf(m_run, mx);
  const float m_use = (m_new == -INFINITY) ? 0.f : m_new;  // no key seen yet: exp2 gives 0, not NaN
  const float alpha = ex2(m_run - m_use);
  raised |= m_new != m_run;
  m_run = m_new;
  const float sub = m_use - ps_log2;
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    s[j][2 * hf] = ex2(fmaf(s[j][2 * hf], f, -sub));
    s[j][2 * hf + 1] = ex2(fmaf(s[j][2 * hf + 1], f, -sub));
    sum += s[j][2 * hf] + s[j][2 * hf + 1];
  }
  l_run = l_run * alpha + sum;
  return alpha;
}

}  // namespace cs::mma_sync
