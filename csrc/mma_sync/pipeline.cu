// The launch sequence of the mma.sync families (w16, w32): the quantization passes of quant/
// into the layouts AttnParams describes, then the configuration's attention kernel.
#include <cstdio>
#include "comfy_sage.h"
#include "common/pipeline.h"
#include "common/scales.h"
#include "mma_sync/pipeline.h"
#include "quant/quant.h"

namespace cs::mma_sync {
namespace {

size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }

struct Layout {  // workspace offsets
  size_t q8, qs, k8, ks, kpart, kmean, v, vpart, vmean, vamax, vscale, corr, total;
};

Layout layout(const AttnArgs& a) {
  const TileShape t = a.tiles;
  const size_t B = a.B, Hq = a.Hq, Hkv = a.Hkv, D = a.head_dim;
  const size_t lqp = pad_q(a.Lq, t), lkp = pad_k(a.Lk, t);
  const size_t nch = ceil_div(a.Lk, kMeanChunk);
  const bool v8 = pv_is_8bit(a.pv);
  Layout l{};
  size_t off = 0;
  auto take = [&](size_t bytes) { const size_t o = off; off = align_up(off + bytes); return o; };
  l.q8 = take(B * Hq * lqp * D);
  l.qs = take(sizeof(float) * B * Hq * q_scales_per_head(a.gran, a.Lq, t));
  l.k8 = take(B * Hkv * lkp * D);
  l.ks = take(sizeof(float) * B * Hkv * k_scales_per_head(a.gran, a.Lk, t));
  l.kpart = take(a.smooth_k ? sizeof(float) * B * Hkv * nch * D : 0);
  l.kmean = take(a.smooth_k ? sizeof(float) * B * Hkv * D : 0);
  l.v = take(B * Hkv * lkp * D * (v8 ? 1 : 2));
  l.vpart = take(a.smooth_v ? sizeof(float) * B * Hkv * nch * D : 0);
  l.vmean = take(a.smooth_v ? sizeof(float) * B * Hkv * D : 0);
  l.vamax = take(v8 ? sizeof(unsigned) * B * Hkv * D : 0);
  l.vscale = take(v8 ? sizeof(float) * B * Hkv * 2 * D : 0);  // scales, then means (AttnParams::v_scale)
  l.corr = take(a.smooth_k && a.lse ? sizeof(float) * B * Hq * a.Lq : 0);
  l.total = off;
  return l;
}

const char* pv_name(PV m) {
  static const char* names[] = {"fp16", "fp8", "fp8-acc16", "int8", "fp16-acc16"};
  return names[int(m)];
}

}  // namespace

size_t workspace_bytes(const AttnArgs& a) { return layout(a).total; }

int attention(const AttnArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream, char* err_msg,
              size_t err_len) {
  const Layout L = layout(a);
  if (!workspace || workspace_bytes < L.total) {
    snprintf(err_msg, err_len, "workspace: need %zu bytes, got %zu", L.total, workspace_bytes);
    return CS_ERR_WORKSPACE;
  }
  if (a.launch == nullptr) {
    snprintf(err_msg, err_len, "no kernel for this configuration");
    return CS_ERR_UNSUPPORTED;
  }
  char* ws = static_cast<char*>(workspace);
  const TileShape t = a.tiles;
  const int D = a.head_dim, bf16 = a.bf16;
  const int64_t *qs = a.q_strides, *ks = a.k_strides, *vs = a.v_strides, *os = a.o_strides;
  const int lqp = pad_q(a.Lq, t), lkp = pad_k(a.Lk, t);
  cudaError_t err = cudaSuccess;
  auto cuda_fail = [&](const char* what) {
    snprintf(err_msg, err_len, "%s (variant int8qk-%spv, head_dim %d, sm_%d): %s", what, pv_name(a.pv), D, a.arch,
             cudaGetErrorString(err));
    return CS_ERR_CUDA;
  };

  float* kmean = a.smooth_k ? reinterpret_cast<float*>(ws + L.kmean) : nullptr;
  if (a.smooth_k) {
    err = launch_token_mean(a.k, ks[0], ks[1], ks[2], bf16, a.B, a.Hkv, a.Lk, D, reinterpret_cast<float*>(ws + L.kpart),
                            kmean, stream);
    if (err != cudaSuccess) return cuda_fail("K mean");
  }
  QuantParams qp{};
  qp.x = a.q; qp.sb = qs[0]; qp.sh = qs[1]; qp.sn = qs[2]; qp.in_bf16 = bf16;
  qp.B = a.B; qp.H = a.Hq; qp.N = a.Lq; qp.N_pad = lqp; qp.D = D;
  qp.tile_rows = q_scale_rows(a.gran, t); qp.groups = q_scale_groups(a.gran);
  qp.out = reinterpret_cast<int8_t*>(ws + L.q8); qp.scale = reinterpret_cast<float*>(ws + L.qs);
  qp.mean = nullptr;
  const bool corr = a.smooth_k && a.lse != nullptr;
  qp.kmean = corr ? kmean : nullptr; qp.corr = corr ? reinterpret_cast<float*>(ws + L.corr) : nullptr;
  qp.head_group = a.Hq / a.Hkv; qp.sm_scale = a.sm_scale;
  if ((err = launch_quant_int8(qp, stream)) != cudaSuccess) return cuda_fail("Q quantization");

  QuantParams kp{};
  kp.x = a.k; kp.sb = ks[0]; kp.sh = ks[1]; kp.sn = ks[2]; kp.in_bf16 = bf16;
  kp.B = a.B; kp.H = a.Hkv; kp.N = a.Lk; kp.N_pad = lkp; kp.D = D;
  kp.tile_rows = t.blk_k; kp.groups = k_scale_groups(a.gran);
  kp.out = reinterpret_cast<int8_t*>(ws + L.k8); kp.scale = reinterpret_cast<float*>(ws + L.ks);
  kp.mean = kmean; kp.kmean = nullptr; kp.corr = nullptr; kp.head_group = 1; kp.sm_scale = 0.f;
  if ((err = launch_quant_int8(kp, stream)) != cudaSuccess) return cuda_fail("K quantization");

  const bool v8 = pv_is_8bit(a.pv);
  if (v8) {
    float* vmean = a.smooth_v ? reinterpret_cast<float*>(ws + L.vmean) : nullptr;
    if (a.smooth_v) {
      err = launch_token_mean(a.v, vs[0], vs[1], vs[2], bf16, a.B, a.Hkv, a.Lk, D,
                              reinterpret_cast<float*>(ws + L.vpart), vmean, stream);
      if (err != cudaSuccess) return cuda_fail("V mean");
    }
    err = launch_v_8bit(a.pv, a.v, vs[0], vs[1], vs[2], bf16, a.B, a.Hkv, a.Lk, lkp, D, vmean,
                        reinterpret_cast<unsigned*>(ws + L.vamax), reinterpret_cast<float*>(ws + L.vscale), ws + L.v,
                        stream);
  } else {
    err = launch_v_f16(a.v, vs[0], vs[1], vs[2], bf16, a.B, a.Hkv, a.Lk, lkp, D, ws + L.v, stream);
  }
  if (err != cudaSuccess) return cuda_fail("V quantization");

  AttnParams ap{};
  ap.q8 = reinterpret_cast<const int8_t*>(ws + L.q8); ap.q_scale = reinterpret_cast<const float*>(ws + L.qs);
  ap.k8 = reinterpret_cast<const int8_t*>(ws + L.k8); ap.k_scale = reinterpret_cast<const float*>(ws + L.ks);
  ap.v = ws + L.v; ap.v_scale = v8 ? reinterpret_cast<const float*>(ws + L.vscale) : nullptr;
  ap.o = a.o; ap.o_sb = os[0]; ap.o_sh = os[1]; ap.o_sn = os[2]; ap.out_bf16 = bf16;
  ap.lse = a.lse; ap.lse_corr = corr ? reinterpret_cast<const float*>(ws + L.corr) : nullptr;
  ap.B = a.B; ap.Hq = a.Hq; ap.Hkv = a.Hkv; ap.Lq = a.Lq; ap.Lk = a.Lk; ap.Lq_pad = lqp; ap.Lk_pad = lkp;
  ap.causal = a.causal ? 1 : 0;
  ap.sm_scale_log2 = a.sm_scale * 1.4426950408889634f;
  ap.q_scale_rows = q_scale_rows(a.gran, t); ap.q_groups = q_scale_groups(a.gran);
  ap.q_scales_per_head = q_scales_per_head(a.gran, a.Lq, t);
  ap.k_groups = k_scale_groups(a.gran); ap.k_scales_per_head = k_scales_per_head(a.gran, a.Lk, t);
  if ((err = a.launch(ap, a.arch, stream)) != cudaSuccess) return cuda_fail("attention kernel");
  return CS_OK;
}

}  // namespace cs::mma_sync
