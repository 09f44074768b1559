// One explicit instantiation per file so that the build compiles variants in parallel.
#include "../attn_w32.cuh"
namespace cs {
template cudaError_t launch_w32</*D=*/64, PV::INT8>(const AttnParams&, cudaStream_t);
}
