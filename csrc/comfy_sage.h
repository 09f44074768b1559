/* C ABI of the comfy-sage native library. Every entry point returns CS_OK (0) or an error
 * code; cs_last_error() gives the message of the calling thread's last failure. Nothing here
 * exits or asserts. Codes for dtype, P·V mode, granularity and family match csrc/common/types.h.
 *
 * family: which kernel family runs (CS_FAMILY_*). CS_FAMILY_AUTO picks the best one compiled
 * for the device's compute capability and the variant (csrc/configs.json "auto_order"); an
 * explicit family that cannot run the call is CS_ERR_UNSUPPORTED, never silently replaced.
 * Tiles, padding and the workspace depend on the family, so every query takes it too. */
#ifndef COMFY_SAGE_H
#define COMFY_SAGE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define CS_ABI_VERSION 2
#define CS_API __attribute__((visibility("default")))
enum { CS_OK = 0, CS_ERR_INVALID = 1, CS_ERR_UNSUPPORTED = 2, CS_ERR_CUDA = 3, CS_ERR_WORKSPACE = 4 };
enum { CS_FAMILY_AUTO = 0, CS_FAMILY_W16 = 1, CS_FAMILY_W32 = 2, CS_FAMILY_SM90 = 3 };

CS_API int cs_abi_version(void);
CS_API const char* cs_last_error(void);

/* The family that runs (pv_mode, head_dim) on arch (major*10+minor) when asked for `family`:
 * *resolved is a concrete CS_FAMILY_*; CS_ERR_UNSUPPORTED (with the reason) when none can. */
CS_API int cs_resolve_family(int family, int pv_mode, int head_dim, int arch, int* resolved);
/* Tile sizes the resolved family quantizes with on arch. */
CS_API int cs_query_tiles(int family, int pv_mode, int head_dim, int arch, int* blk_q, int* warp_q, int* blk_k);
/* Scale counts per (batch, head): which 0 = Q, 1 = K, 2 = V (per channel); n_tokens of that tensor. */
CS_API int cs_scale_count(int family, int which, int granularity, int pv_mode, int n_tokens, int head_dim, int arch,
                          int64_t* count);
/* 1 when this build runs the variant on arch with `family` (CS_FAMILY_AUTO: with any), else 0. */
CS_API int cs_variant_supported(int family, int pv_mode, int head_dim, int arch);
/* Bytes of device workspace cs_attention needs. smooth_v: subtract V's per-channel mean before
 * quantizing V and add it to the output (INT8 P·V; the other modes ignore it). */
CS_API int cs_workspace_bytes(int family, int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int pv_mode,
                              int granularity, int smooth_k, int smooth_v, int return_lse, int arch, size_t* bytes);

/* Attention. q, k, v, o: (B, H, L, D) described by strides in elements (batch, head, token; the
 * last dim contiguous), so HND and NHD are read and written in place. dtype 0 fp16, 1 bf16
 * (inputs and output). lse: (B, Hq, Lq) fp32 contiguous or NULL. stream: a cudaStream_t. */
CS_API int cs_attention(int family, const void* q, const void* k, const void* v, void* o, float* lse, int dtype,
                        int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, const int64_t* q_strides,
                        const int64_t* k_strides, const int64_t* v_strides, const int64_t* o_strides, int pv_mode,
                        int granularity, int smooth_k, int smooth_v, int is_causal, float sm_scale, void* workspace,
                        size_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif
#endif
