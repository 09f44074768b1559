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

// x, hidden from the optimizer where it is used: addresses derived from it are recomputed at
// each use instead of hoisted out of the main loop (one register each, which 32-row warps lack).
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// opaque(x) that also waits for y: loads addressed from the result are not issued before y
// exists, which bounds how many independent MMA chains the scheduler keeps in flight.
// (A real instruction: ptxas sees no dependency through an empty asm. x changes only if y is
// NaN, and then to another lane index in [0, 32): addresses stay inside the tile.)
__device__ __forceinline__ int opaque_after(int x, float y) {
  asm volatile("{\n .reg .pred p;\n setp.nan.f32 p, %1, %1;\n @p xor.b32 %0, %0, 16;\n}\n" : "+r"(x) : "f"(y));
  return x;
}

__device__ __forceinline__ int opaque_after(int x, int y) {
  asm volatile("{\n .reg .pred p;\n setp.eq.s32 p, %1, 0x7fffffff;\n @p xor.b32 %0, %0, 16;\n}\n" : "+r"(x) : "r"(y));
  return x;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Copy a ROWS x (CHUNKS*16 B) tile from global (row stride in bytes) into swizzled smem.
template <int ROWS, int CHUNKS, int THREADS>
__device__ __forceinline__ void load_tile_async(uint8_t* smem, const uint8_t* gmem, int64_t row_bytes, int tid) {
  static_assert((ROWS * CHUNKS) % THREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int i = 0; i < ROWS * CHUNKS / THREADS; ++i) {
    const int idx = tid + i * THREADS;
    const int r = idx / CHUNKS, c = idx % CHUNKS;
    cp_async16(smem + swz<CHUNKS>(r, c), gmem + r * row_bytes + c * 16);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* d, const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* d, const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(smem_u32(smem)));
}

}  // namespace cs
