// Host launchers of the fused quantization passes (quant_kernels.cu).
#pragma once
#include "common.cuh"
#include "params.h"

namespace cs {

constexpr int kMeanChunk = 1024;  // tokens per partial sum / amax block

cudaError_t launch_k_mean(const void* k, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int D,
                          float* partial, float* mean, cudaStream_t stream);
cudaError_t launch_quant_int8(const QuantParams& p, cudaStream_t stream);
cudaError_t launch_v_f16(const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int N_pad,
                         int D, void* out, cudaStream_t stream);
cudaError_t launch_v_8bit(PV mode, const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N,
                          int N_pad, int D, unsigned int* amax, float* vscale, void* out, cudaStream_t stream);

}  // namespace cs
