// Host entry points of the Hopper family (csrc/sm90/). The dispatch point calls these on
// compute capability 9.0; they return CS_OK or an error code with a message in `err`, and never
// synchronize the device.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cs { namespace sm90 {

// The quantization tiles this family reads (reported through cs_query_tiles).
constexpr int kTileBlkQ = 128, kTileWarpQ = 16, kTileBlkK = 64;

// True when this library holds the sm_90a kernels (they are compiled only in an sm_90a pass).
bool available();

size_t workspace_bytes(int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int return_lse);

// FP8 P·V (int8qk-fp8pv). Same arguments as cs_attention (comfy_sage.h) without the P·V mode.
int attention(const void* q, const void* k, const void* v, void* o, float* lse, int dtype, int B, int Hq, int Hkv,
              int Lq, int Lk, int head_dim, const int64_t* q_strides, const int64_t* k_strides,
              const int64_t* v_strides, const int64_t* o_strides, int granularity, int smooth_k, int is_causal,
              float sm_scale, void* workspace, size_t workspace_bytes, void* stream, char* err, size_t err_len);

}}  // namespace cs::sm90
