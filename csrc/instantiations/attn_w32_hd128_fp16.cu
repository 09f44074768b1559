// One explicit instantiation per file so that the build compiles variants in parallel (this one
// with its own ptxas option: comfy_sage/build.py FILE_FLAGS).
#include "../attn_w32.cuh"
namespace cs {
template cudaError_t launch_w32</*D=*/128, PV::FP16>(const AttnParams&, cudaStream_t);
}
