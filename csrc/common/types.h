// Shared vocabulary of the native library: modes as enum classes, tile shapes, small constexpr
// helpers. No torch, no host-side process killing: every host entry point returns an error code.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace cs {

// Codes shared with the C ABI (comfy_sage.h). Values are stable: Python passes them as ints.
enum class PV : int { FP16 = 0, FP8 = 1, FP8_ACC16 = 2, INT8 = 3, FP16_ACC16 = 4 };
enum class Gran : int { PER_THREAD = 0, PER_WARP = 1, PER_BLOCK = 2 };
// Kernel families (CS_FAMILY_* in comfy_sage.h). AUTO is resolved by abi.cu, never launched.
enum class Family : int { AUTO = 0, W16 = 1, W32 = 2, SM90 = 3 };

constexpr int kNumPV = 5;
constexpr int kNumGran = 3;
constexpr int kNumFamily = 4;

// P·V modes whose V operand is 8-bit (stored transposed, token-permuted, per-channel scaled).
__host__ __device__ constexpr bool pv_is_8bit(PV m) { return m == PV::FP8 || m == PV::FP8_ACC16 || m == PV::INT8; }
__host__ __device__ constexpr bool pv_is_fp8(PV m) { return m == PV::FP8 || m == PV::FP8_ACC16; }
// The static P scale: P in [0,1] is mapped onto the operand format's range.
__host__ __device__ constexpr float pv_p_scale(PV m) { return m == PV::INT8 ? 255.f : (pv_is_fp8(m) ? 448.f : 1.f); }
// max|V[:, d]| maps onto this value (per channel). FP8_ACC16 sums a block of blk_k keys in fp16:
// blk_k · 448 · target stays below 65504 at 144 / blk_k (2.25 for 64 keys; comfy_sage/reference.py v_target).
__host__ __device__ constexpr float pv_v_target(PV m, int blk_k) {
  return m == PV::INT8 ? 127.f : (m == PV::FP8 ? 448.f : 144.f / blk_k);
}
// Lowest SM (major*10+minor) that runs a mode natively or at all.
constexpr int pv_min_arch(PV m) { return pv_is_fp8(m) ? 89 : 80; }

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The tiles a kernel family quantizes with (per (family, arch, head dim, mode): each family's
// traits say which). Q is padded to blk_q rows and K/V to blk_k tokens; PER_BLOCK Q scales
// cover blk_q rows, PER_WARP and PER_THREAD Q scales warp_q rows, K scales one blk_k block.
struct TileShape {
  int blk_q;   // query rows per quantization tile (the Q padding)
  int warp_q;  // query rows per warp-level scale tile (the MMA's m extent the fragment follows)
  int blk_k;   // kv tokens per main-loop step (the K/V padding)
};

}  // namespace cs
