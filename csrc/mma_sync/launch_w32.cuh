// Kernel and host launcher of the 32-row-warp kernel (family w32), included by its generated
// instantiation files (mma_sync/instantiations/, one per (head dim, P·V mode) of configs.json).
#pragma once
#include "mma_sync/launch.h"
#include "mma_sync/mainloop_w32.cuh"

namespace cs::mma_sync {

// Compiled for sm_90a only, where it was measured (NOTES.md v5); elsewhere a stub, never
// launched (configs.json gives the family the arches it runs on).
template <int D, PV MODE>
__global__ void __launch_bounds__(W32Cfg<D, MODE>::THREADS) w32_kernel(const __grid_constant__ AttnParams p) {
  if constexpr (kDeviceArch != 0 && kDeviceArch != 90) __trap();
  else w32_cta<D, MODE>(p);
}

template <int D, PV MODE>
cudaError_t launch_w32(const AttnParams& p, int /*arch*/, cudaStream_t stream) {
  using C = W32Cfg<D, MODE>;
  auto kernel = w32_kernel<D, MODE>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.Lq_pad / C::BLK_Q, p.Hq, p.B);
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cs::mma_sync
