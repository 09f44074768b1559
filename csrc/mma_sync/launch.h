// Host entry points of the mma.sync family, as the dispatch table (instances.h, abi.cu) names
// them: the kernel launchers (cs::Launcher), each explicitly instantiated once per configuration
// of configs.json in a generated file of mma_sync/instantiations/, the tiles, and the pipeline.
#pragma once
#include "common/types.h"
#include "common/params.h"
#include "mma_sync/pipeline.h"
#include "mma_sync/traits.h"

namespace cs::mma_sync {

// 16-row warps: every arch the library is built for, every P·V mode (FP8 modes from sm_89).
template <int D, PV MODE>
cudaError_t launch_w16(const AttnParams& p, int arch, cudaStream_t stream);

// 32-row warps: sm_90, FP16 and INT8 P·V.
template <int D, PV MODE>
cudaError_t launch_w32(const AttnParams& p, int arch, cudaStream_t stream);

}  // namespace cs::mma_sync
