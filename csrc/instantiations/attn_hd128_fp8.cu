// One explicit instantiation per file so that the build compiles variants in parallel.
#include "../attn_kernel.cuh"
namespace cs {
template cudaError_t launch_attn</*D=*/128, PV::FP8>(const AttnParams&, cudaStream_t);
}
