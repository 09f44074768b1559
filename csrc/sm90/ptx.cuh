// sm_90a PTX helpers of the Hopper family: mbarriers, TMA bulk-tensor loads, named barriers,
// setmaxnreg, wgmma fences and shared-memory matrix descriptors. Device code only; every body
// is empty outside the sm_90a feature set (the library is compiled for other arches too, where
// this family is never launched).
#pragma once
#include <cstdint>
#include "common/convert.cuh"  // pack_half2, ex2

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CS_SM90_DEVICE 1
#else
#define CS_SM90_DEVICE 0
#endif

namespace cs { namespace sm90 {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// blockIdx.y read again where it is used: a value ptxas cannot keep live from the kernel's start
// (the consumers' epilogue, after a main loop that needs every register).
__device__ __forceinline__ int ctaid_y() {
  int r = 0;
#if CS_SM90_DEVICE
  asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(r));
#endif
  return r;
}

// ---- mbarrier ---------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if CS_SM90_DEVICE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Makes the initialized barriers visible to the async proxy (TMA) before first use.
__device__ __forceinline__ void fence_barrier_init() {
#if CS_SM90_DEVICE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
#if CS_SM90_DEVICE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if CS_SM90_DEVICE
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Blocks until the phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if CS_SM90_DEVICE
  asm volatile(
      "{\n.reg .pred P1;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra.uni DONE_%=;\nbra.uni WAIT_%=;\nDONE_%=:\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// ---- TMA --------------------------------------------------------------------------------
// 3-D tile load (coordinates innermost first) completing on an mbarrier; out-of-bounds
// elements arrive as zeros.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* tmap, uint32_t bar, int c0, int c1, int c2) {
#if CS_SM90_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tmap)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
#endif
}
__device__ __forceinline__ void prefetch_tmap(const void* tmap) {
#if CS_SM90_DEVICE
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(tmap)) : "memory");
#endif
}

// ---- register reallocation between warpgroups --------------------------------------------
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
#if CS_SM90_DEVICE
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
#if CS_SM90_DEVICE
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// ---- wgmma bookkeeping -------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() {
#if CS_SM90_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if CS_SM90_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if CS_SM90_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Keeps ptxas from moving reads/writes of an accumulator register across a wgmma boundary.
// (CUTLASS's warpgroup_fence_operand: without it the compiler may read an accumulator before
// wgmma.wait_group, or reuse the registers of an in-flight A operand.)
__device__ __forceinline__ void reg_fence(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }
template <typename T, int N>
__device__ __forceinline__ void reg_fence(T (&a)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) reg_fence(a[i]);
}

// Shared-memory matrix descriptor of a K-major tile written by TMA with the matching swizzle:
// rows of `row_bytes` (128 -> 128B swizzle, 64 -> 64B swizzle), 8-row core-matrix groups
// `8 * row_bytes` apart (stride byte offset); the leading byte offset is unused for swizzled
// K-major layouts. The tile base must be aligned to the swizzle atom (1024 / 512 bytes).
template <int ROW_BYTES>
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  static_assert(ROW_BYTES == 128 || ROW_BYTES == 64, "smem_desc: rows of 64 or 128 bytes");
  constexpr uint64_t layout = ROW_BYTES == 128 ? 1 : 2;
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t((8 * ROW_BYTES) >> 4) << 32) |
         (layout << 62);
}

// ---- conversions -------------------------------------------------------------------------
// Four floats -> four e4m3 bytes (round to nearest even, saturating), a in the lowest byte: what
// common/convert.cuh pack_e4m3x4 computes (this one hides it in cs::sm90), in one asm block; the
// common one changes the attention kernel's SASS (16 more instructions), so this stays until timed.
__device__ __forceinline__ uint32_t pack_e4m3x4(float a, float b, float c, float d) {
  uint32_t r = 0;
#if CS_SM90_DEVICE
  asm("{\n.reg .b16 lo, hi;\n"
      "cvt.rn.satfinite.e4m3x2.f32 lo, %2, %1;\n"
      "cvt.rn.satfinite.e4m3x2.f32 hi, %4, %3;\n"
      "mov.b32 %0, {lo, hi};\n}\n"
      : "=r"(r)
      : "f"(a), "f"(b), "f"(c), "f"(d));
#endif
  return r;
}

}}  // namespace cs::sm90
