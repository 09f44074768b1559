/* C ABI of the comfy-sage native library. Every entry point returns CS_OK (0) or an error
 * code; cs_last_error() gives the message of the calling thread's last failure. Nothing here
 * exits or asserts. Codes for dtype, P·V mode and granularity match csrc/common.cuh. */
#ifndef COMFY_SAGE_H
#define COMFY_SAGE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define CS_ABI_VERSION 1
#define CS_API __attribute__((visibility("default")))
enum { CS_OK = 0, CS_ERR_INVALID = 1, CS_ERR_UNSUPPORTED = 2, CS_ERR_CUDA = 3, CS_ERR_WORKSPACE = 4 };

CS_API int cs_abi_version(void);
CS_API const char* cs_last_error(void);

/* Tile sizes of a variant on an arch (arch = major*10+minor). */
CS_API int cs_query_tiles(int pv_mode, int head_dim, int arch, int* blk_q, int* warp_q, int* blk_k);
/* Scale counts per (batch, head): which 0 = Q, 1 = K, 2 = V (per channel); n_tokens of that tensor. */
CS_API int cs_scale_count(int which, int granularity, int pv_mode, int n_tokens, int head_dim, int64_t* count);
/* 1 when this build holds the variant for the arch, else 0. */
CS_API int cs_variant_supported(int pv_mode, int head_dim, int arch);
/* Bytes of device workspace cs_attention needs. */
CS_API int cs_workspace_bytes(int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int pv_mode, int granularity,
                       int smooth_k, int return_lse, size_t* bytes);

/* Attention. q, k, v, o: (B, H, L, D) described by strides in elements (batch, head, token; the
 * last dim contiguous), so HND and NHD are read and written in place. dtype 0 fp16, 1 bf16
 * (inputs and output). lse: (B, Hq, Lq) fp32 contiguous or NULL. stream: a cudaStream_t. */
CS_API int cs_attention(const void* q, const void* k, const void* v, void* o, float* lse, int dtype, int B, int Hq,
                 int Hkv, int Lq, int Lk, int head_dim, const int64_t* q_strides, const int64_t* k_strides,
                 const int64_t* v_strides, const int64_t* o_strides, int pv_mode, int granularity, int smooth_k,
                 int is_causal, float sm_scale, void* workspace, size_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif
#endif
