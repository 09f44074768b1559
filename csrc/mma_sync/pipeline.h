// The launch sequence the mma.sync families share (pipeline.cu), as the dispatch point calls it
// (the family interface of common/pipeline.h).
#pragma once
#include "common/pipeline.h"

namespace cs::mma_sync {

size_t workspace_bytes(const AttnArgs& a);
int attention(const AttnArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream, char* err,
              size_t err_len);

}  // namespace cs::mma_sync
