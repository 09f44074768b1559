// Shared vocabulary of the native library: modes as enum classes, small constexpr helpers.
// No torch, no host-side process killing: every host entry point returns an error code.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace cs {

// Codes shared with the C ABI (comfy_sage.h). Values are stable: Python passes them as ints.
enum class PV : int { FP16 = 0, FP8 = 1, FP8_ACC16 = 2, INT8 = 3, FP16_ACC16 = 4 };
enum class Gran : int { PER_THREAD = 0, PER_WARP = 1, PER_BLOCK = 2 };
enum class DType : int { F16 = 0, BF16 = 1 };

constexpr int kNumPV = 5;
constexpr int kNumGran = 3;

// P·V modes whose V operand is 8-bit (stored transposed, token-permuted, per-channel scaled).
__host__ __device__ constexpr bool pv_is_8bit(PV m) { return m == PV::FP8 || m == PV::FP8_ACC16 || m == PV::INT8; }
__host__ __device__ constexpr bool pv_is_fp8(PV m) { return m == PV::FP8 || m == PV::FP8_ACC16; }
// The static P scale: P in [0,1] is mapped onto the operand format's range.
__host__ __device__ constexpr float pv_p_scale(PV m) { return m == PV::INT8 ? 255.f : (pv_is_fp8(m) ? 448.f : 1.f); }
// max|V[:, d]| maps onto this value (per channel).
__host__ __device__ constexpr float pv_v_target(PV m) { return m == PV::INT8 ? 127.f : (m == PV::FP8 ? 448.f : 2.25f); }
// Lowest SM (major*10+minor) that runs a mode natively or at all.
constexpr int pv_min_arch(PV m) { return pv_is_fp8(m) ? 89 : 80; }

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace cs
