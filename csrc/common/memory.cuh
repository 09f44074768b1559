// Shared-memory movement: cp.async 16-byte copies, ldmatrix, and the XOR swizzle that keeps
// 8 ldmatrix row addresses on 8 distinct bank groups.
#pragma once
#include <cstdint>

namespace cs {

// Byte offset of 16-byte chunk c of row r in a tile whose rows hold CHUNKS chunks.
// 8+ chunks per row (>= 128 B): chunk ^= r%8. 4 chunks (64 B rows, two rows per 128 B bank
// line): chunk ^= (r/2)%4. Either way rows r..r+7 at one logical chunk hit 8 distinct groups.
template <int CHUNKS>
__device__ __forceinline__ int swz(int r, int c) {
  static_assert(CHUNKS == 4 || CHUNKS % 8 == 0, "swizzle: rows must be 64 B or a multiple of 128 B");
  if constexpr (CHUNKS == 4) return r * 64 + ((c ^ ((r >> 1) & 3)) << 4);
  else return r * (CHUNKS * 16) + ((c ^ (r & 7)) << 4);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Explicit shared-memory loads/stores, for values parked in shared memory instead of registers.
__device__ __forceinline__ void st_shared_f32(uint32_t addr, float x) {
  asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(addr), "f"(x));
}
__device__ __forceinline__ float ld_shared_f32(uint32_t addr) {
  float x;
  asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(x) : "r"(addr));
  return x;
}

__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Copy a ROWS x (CHUNKS*16 B) tile from global (row stride in bytes) into swizzled smem
// (smem: a shared-space address). Thread tid copies chunk tid%CHUNKS of rows tid/CHUNKS + k*PASS:
// PASS is a multiple of the swizzle period (8 rows), so the swizzled offset is computed once and
// each further copy is an immediate offset.
template <int ROWS, int CHUNKS, int THREADS>
__device__ __forceinline__ void load_tile_async(uint32_t smem, const uint8_t* gmem, int64_t row_bytes, int tid) {
  constexpr int PASS = THREADS / CHUNKS;
  static_assert(THREADS % CHUNKS == 0 && PASS % 8 == 0 && ROWS % PASS == 0,
                "tile chunks must divide evenly among threads, in whole swizzle periods");
  const int r0 = tid / CHUNKS, c = tid % CHUNKS;
  const uint32_t s = smem + swz<CHUNKS>(r0, c);
  const uint8_t* g = gmem + r0 * row_bytes + c * 16;
#pragma unroll
  for (int i = 0; i < ROWS / PASS; ++i) cp_async16(s + i * PASS * CHUNKS * 16, g + i * PASS * row_bytes);
}

// smem: a shared-space address (smem_u32).
__device__ __forceinline__ void ldmatrix_x4(uint32_t* d, uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* d, uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem));
}

}  // namespace cs
