// Kernel and host launcher of the 16-row-warp kernel (family w16), included by its generated
// instantiation files (mma_sync/instantiations/, one per (head dim, P·V mode) of configs.json).
#pragma once
#include "mma_sync/launch.h"
#include "mma_sync/mainloop_w16.cuh"

namespace cs::mma_sync {

// On the ~100 KB shared-memory arches the host never launches 64-row CTAs, and their body is a
// stub (compiled there, they spilled 12-44 B on sm_120a).
template <int D, PV MODE, int CTA_Q>
__global__ void __launch_bounds__(W16Cfg<D, MODE, CTA_Q>::THREADS, W16Cfg<D, MODE, CTA_Q>::MIN_CTAS)
w16_kernel(const __grid_constant__ AttnParams p) {
  if constexpr (CTA_Q == 64 && small_smem_arch(kDeviceArch)) __trap();
  else w16_cta<D, MODE, CTA_Q>(p);
}

template <int D, PV MODE, int CTA_Q>
cudaError_t launch_w16_cta(const AttnParams& p, cudaStream_t stream) {
  using C = W16Cfg<D, MODE, CTA_Q>;
  auto kernel = w16_kernel<D, MODE, CTA_Q>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.Lq_pad / C::BLK_Q, p.Hq, p.B);
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(p);
  return cudaGetLastError();
}

template <int D, PV MODE>
cudaError_t launch_w16(const AttnParams& p, int arch, cudaStream_t stream) {
  return w16_cta_q(arch) == 64 ? launch_w16_cta<D, MODE, 64>(p, stream) : launch_w16_cta<D, MODE, 128>(p, stream);
}

}  // namespace cs::mma_sync
