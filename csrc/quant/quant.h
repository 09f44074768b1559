// Host launchers of the fused quantization passes (quant.cu), shared by every kernel family.
#pragma once
#include "common/types.h"
#include "common/params.h"

namespace cs {

constexpr int kMeanChunk = 1024;  // tokens per partial sum / amax block

// Per-channel mean over tokens of K (K smoothing) or V (V smoothing): partial sums over chunks
// of kMeanChunk tokens, then a fixed-order sum (deterministic). partial: (B, H, chunks, D).
cudaError_t launch_token_mean(const void* x, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int D,
                              float* partial, float* mean, cudaStream_t stream);
cudaError_t launch_quant_int8(const QuantParams& p, cudaStream_t stream);
cudaError_t launch_v_f16(const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N, int N_pad,
                         int D, void* out, cudaStream_t stream);
// V to 8-bit per channel, transposed and token-permuted for the mma.sync P·V fragment; vmean
// (B, H, D) is subtracted first when not null (V smoothing). vscale: (B, H, 2, D), the scales,
// then the mean subtracted (zeros when vmean is null), as AttnParams::v_scale.
cudaError_t launch_v_8bit(PV mode, const void* v, int64_t sb, int64_t sh, int64_t sn, int bf16, int B, int H, int N,
                          int N_pad, int D, const float* vmean, unsigned int* amax, float* vscale, void* out,
                          cudaStream_t stream);

}  // namespace cs
