// Declarations of the explicitly instantiated attention launchers (instantiations/*.cu).
#pragma once
#include "common.cuh"
#include "params.h"

namespace cs {
template <int D, PV MODE>
cudaError_t launch_attn(const AttnParams& p, cudaStream_t stream);
}
