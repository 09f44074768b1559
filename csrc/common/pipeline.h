// What the dispatch point (abi.cu) hands a kernel family: the checked arguments of one
// cs_attention call, the family's tiles and the launcher of the configuration that runs it.
// Every family provides, in its namespace (configs.json "pipeline"):
//   size_t workspace_bytes(const AttnArgs&);
//   int attention(const AttnArgs&, void* workspace, size_t workspace_bytes, cudaStream_t,
//                 char* err, size_t err_len);  // CS_OK or a CS_ERR_* code with the message in err
//   TileShape tiles(int head_dim, PV mode, int arch);  (configs.json "tiles")
// The mma.sync families share one pipeline (mma_sync/pipeline.cu: the quantization passes of
// quant/, then the configuration's kernel); a family with its own quantization layout (sm90)
// brings its own. Host code returns codes; it never exits, asserts or synchronizes the device.
#pragma once
#include <cstddef>
#include <cstdint>
#include "common/types.h"
#include "common/params.h"

namespace cs {

// The launcher of one compiled configuration (an explicit instantiation; configs.json).
using Launcher = cudaError_t (*)(const AttnParams& p, int arch, cudaStream_t stream);

struct AttnArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;                  // (B, Hq, Lq) fp32, or null
  int bf16;                    // inputs and output: 0 fp16, 1 bf16
  int B, Hq, Hkv, Lq, Lk, head_dim;
  const int64_t* q_strides;    // (batch, head, token) in elements; the last dim is contiguous
  const int64_t* k_strides;
  const int64_t* v_strides;
  const int64_t* o_strides;
  PV pv;
  Gran gran;
  bool smooth_k;
  bool smooth_v;               // INT8 P·V only (abi.cu clears it for the other modes)
  bool causal;
  float sm_scale;
  int arch;                    // the device's major*10+minor
  Family family;               // resolved, never AUTO
  TileShape tiles;             // the family's, for this arch and variant
  Launcher launch;             // the configuration's kernel, or null for a family that launches its own
};

}  // namespace cs
