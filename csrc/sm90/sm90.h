// Entry points of the Hopper family (csrc/sm90/) for the dispatch point (abi.cu, through
// instances.h generated from configs.json): the pipeline interface of common/pipeline.h. The
// family brings its own quantization passes (quant.cuh), so it reads only the raw inputs.
#pragma once
#include <cstddef>
#include <cstdint>
#include "common/pipeline.h"

namespace cs { namespace sm90 {

// The quantization tiles: Q scales per (16-row wgmma warp tile, row % 8) (PER_BLOCK: 128 rows),
// K scales per (128-token block, (token % 8) / 2). blk_k is also the reference's softmax block, so
// it must be the kernel's (128 keys): with 64-token K blocks the reference rounds P to e4m3 relative
// to a running max taken every 64 keys and the kernel every 128, 0.3-1 % apart (NOTES.md v4).
TileShape tiles(int head_dim, PV mode, int arch);
size_t workspace_bytes(const AttnArgs& a);
int attention(const AttnArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream, char* err,
              size_t err_len);

}}  // namespace cs::sm90
