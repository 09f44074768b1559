// Declarations of the explicitly instantiated attention launchers (instantiations/*.cu).
#pragma once
#include <cstdlib>
#include <cstring>
#include "common.cuh"
#include "params.h"

namespace cs {
// The kernel of every arch (attn_kernel.cuh), one file per (head dim, P·V mode).
template <int D, PV MODE>
cudaError_t launch_attn(const AttnParams& p, cudaStream_t stream);

// The 32-row-warp kernel (attn_w32.cuh), for these modes on sm_90; own files (own ptxas options).
__host__ __device__ constexpr bool w32_mode(PV m) { return m == PV::FP16 || m == PV::INT8; }
template <int D, PV MODE>
cudaError_t launch_w32(const AttnParams& p, cudaStream_t stream);

// COMFY_SAGE_CUDA_KERNEL=w16: run the 16-row kernel on sm_90 as well (tests of the kernel the
// other arches run, on a Hopper machine). Read at each launch: a test may switch it.
inline bool force_w16() {
  const char* v = std::getenv("COMFY_SAGE_CUDA_KERNEL");
  return v != nullptr && std::strcmp(v, "w16") == 0;
}
}  // namespace cs
