// Entry points of the Hopper family (csrc/sm90/) for the dispatch point (abi.cu, through
// instances.h generated from configs.json): the pipeline interface of common/pipeline.h. The
// family brings its own quantization passes (quant.cuh), so it reads only the raw inputs.
#pragma once
#include <cstddef>
#include <cstdint>
#include "common/pipeline.h"

namespace cs { namespace sm90 {

// The quantization tiles: Q scales per (16-row wgmma warp tile, row % 8) (PER_BLOCK: 128 rows),
// K scales per (64-token block, (token % 8) / 2). The kernel's own tiles (128 rows, 128 keys) are
// multiples of these, so the reference's quantization groups are the mma.sync families' ones.
TileShape tiles(int head_dim, PV mode, int arch);
size_t workspace_bytes(const AttnArgs& a);
int attention(const AttnArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream, char* err,
              size_t err_len);

}}  // namespace cs::sm90
