// The C ABI: argument checks, workspace layout, the launch sequence. Host code only
// returns codes; it never exits, asserts or synchronizes the device.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include "comfy_sage.h"
#include "common.cuh"
#include "tiles.h"
#include "params.h"
#include "attn_launch.h"
#include "quant_kernels.h"

namespace {

thread_local char g_err[512] = "";

int fail(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof(g_err), fmt, ap);
  va_end(ap);
  return code;
}

const char* pv_name(int m) {
  static const char* names[] = {"fp16", "fp8", "fp8-acc16", "int8", "fp16-acc16"};
  return (m >= 0 && m < cs::kNumPV) ? names[m] : "?";
}

bool valid_pv(int m) { return m >= 0 && m < cs::kNumPV; }
bool valid_gran(int g) { return g >= 0 && g < cs::kNumGran; }

// The arches this library was compiled for, from the build (-DCS_ARCHS="80,86,...").
#ifndef CS_ARCHS
#define CS_ARCHS ""
#endif

bool built_for(int arch) {
  const char* s = CS_ARCHS;
  while (*s) {
    int a = 0;
    while (*s >= '0' && *s <= '9') a = a * 10 + (*s++ - '0');
    if (a == arch) return true;
    while (*s && (*s < '0' || *s > '9')) ++s;
  }
  return false;
}

size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }

struct Layout {  // workspace offsets
  size_t q8, qs, k8, ks, kpart, kmean, v, vamax, vscale, corr, total;
};

Layout layout(int B, int Hq, int Hkv, int Lq, int Lk, int D, cs::PV pv, cs::Gran gr, bool smooth, bool lse) {
  const size_t lqp = cs::pad_q(Lq), lkp = cs::pad_k(Lk);
  const size_t nch = cs::ceil_div(Lk, cs::kMeanChunk);
  Layout l{};
  size_t off = 0;
  auto take = [&](size_t bytes) { const size_t o = off; off = align_up(off + bytes); return o; };
  l.q8 = take((size_t)B * Hq * lqp * D);
  l.qs = take(sizeof(float) * B * Hq * cs::q_scales_per_head(gr, Lq));
  l.k8 = take((size_t)B * Hkv * lkp * D);
  l.ks = take(sizeof(float) * B * Hkv * cs::k_scales_per_head(gr, Lk));
  l.kpart = take(smooth ? sizeof(float) * B * Hkv * nch * D : 0);
  l.kmean = take(smooth ? sizeof(float) * B * Hkv * D : 0);
  l.v = take((size_t)B * Hkv * lkp * D * (cs::pv_is_8bit(pv) ? 1 : 2));
  l.vamax = take(sizeof(unsigned) * B * Hkv * D);
  l.vscale = take(sizeof(float) * B * Hkv * D);
  l.corr = take(smooth && lse ? sizeof(float) * B * Hq * Lq : 0);
  l.total = off;
  return l;
}

using Launcher = cudaError_t (*)(const cs::AttnParams&, cudaStream_t);

Launcher attn_launcher(int D, cs::PV pv) {
  switch (pv) {
    case cs::PV::FP16: return D == 64 ? cs::launch_attn<64, cs::PV::FP16> : cs::launch_attn<128, cs::PV::FP16>;
    case cs::PV::FP16_ACC16: return D == 64 ? cs::launch_attn<64, cs::PV::FP16_ACC16> : cs::launch_attn<128, cs::PV::FP16_ACC16>;
    case cs::PV::FP8: return D == 64 ? cs::launch_attn<64, cs::PV::FP8> : cs::launch_attn<128, cs::PV::FP8>;
    case cs::PV::FP8_ACC16: return D == 64 ? cs::launch_attn<64, cs::PV::FP8_ACC16> : cs::launch_attn<128, cs::PV::FP8_ACC16>;
    case cs::PV::INT8: return D == 64 ? cs::launch_attn<64, cs::PV::INT8> : cs::launch_attn<128, cs::PV::INT8>;
  }
  return nullptr;
}

int device_arch(int* arch) {
  int dev = 0, major = 0, minor = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (e != cudaSuccess) return fail(CS_ERR_CUDA, "querying the device: %s", cudaGetErrorString(e));
  *arch = major * 10 + minor;
  return CS_OK;
}

}  // namespace

extern "C" {

int cs_abi_version(void) { return CS_ABI_VERSION; }
const char* cs_last_error(void) { return g_err; }

int cs_query_tiles(int pv_mode, int head_dim, int arch, int* blk_q, int* warp_q, int* blk_k) {
  if (!valid_pv(pv_mode)) return fail(CS_ERR_INVALID, "pv_mode: expected 0..%d, got %d", cs::kNumPV - 1, pv_mode);
  if (head_dim != 64 && head_dim != 128) return fail(CS_ERR_INVALID, "head_dim: expected 64|128, got %d", head_dim);
  if (!blk_q || !warp_q || !blk_k) return fail(CS_ERR_INVALID, "cs_query_tiles: null output pointer");
  const cs::TileShape t = cs::tiles_for(head_dim, static_cast<cs::PV>(pv_mode), arch);
  *blk_q = t.blk_q; *warp_q = t.warp_q; *blk_k = t.blk_k;
  return CS_OK;
}

int cs_scale_count(int which, int granularity, int pv_mode, int n_tokens, int head_dim, int64_t* count) {
  if (!valid_gran(granularity)) return fail(CS_ERR_INVALID, "granularity: expected 0..2, got %d", granularity);
  if (!valid_pv(pv_mode)) return fail(CS_ERR_INVALID, "pv_mode: expected 0..%d, got %d", cs::kNumPV - 1, pv_mode);
  if (n_tokens <= 0) return fail(CS_ERR_INVALID, "n_tokens: expected > 0, got %d", n_tokens);
  if (!count) return fail(CS_ERR_INVALID, "cs_scale_count: null output pointer");
  const cs::Gran g = static_cast<cs::Gran>(granularity);
  switch (which) {
    case 0: *count = cs::q_scales_per_head(g, n_tokens); return CS_OK;
    case 1: *count = cs::k_scales_per_head(g, n_tokens); return CS_OK;
    case 2: *count = cs::pv_is_8bit(static_cast<cs::PV>(pv_mode)) ? head_dim : 0; return CS_OK;
  }
  return fail(CS_ERR_INVALID, "which: expected 0 (Q), 1 (K) or 2 (V), got %d", which);
}

int cs_variant_supported(int pv_mode, int head_dim, int arch) {
  if (!valid_pv(pv_mode) || (head_dim != 64 && head_dim != 128)) return 0;
  const int a = arch == 90 ? 90 : arch;  // sm_90a cubins serve cc 9.0
  if (!built_for(a)) return 0;
  return arch >= cs::pv_min_arch(static_cast<cs::PV>(pv_mode)) ? 1 : 0;
}

int cs_workspace_bytes(int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int pv_mode, int granularity,
                       int smooth_k, int return_lse, size_t* bytes) {
  if (B <= 0 || Hq <= 0 || Hkv <= 0 || Lq <= 0 || Lk <= 0) return fail(CS_ERR_INVALID, "sizes must be positive");
  if (!valid_pv(pv_mode) || !valid_gran(granularity)) return fail(CS_ERR_INVALID, "pv_mode/granularity out of range");
  if (!bytes) return fail(CS_ERR_INVALID, "cs_workspace_bytes: null output pointer");
  *bytes = layout(B, Hq, Hkv, Lq, Lk, head_dim, static_cast<cs::PV>(pv_mode), static_cast<cs::Gran>(granularity),
                  smooth_k != 0, return_lse != 0).total;
  return CS_OK;
}

int cs_attention(const void* q, const void* k, const void* v, void* o, float* lse, int dtype, int B, int Hq,
                 int Hkv, int Lq, int Lk, int head_dim, const int64_t* qs, const int64_t* ks, const int64_t* vs,
                 const int64_t* os, int pv_mode, int granularity, int smooth_k, int is_causal, float sm_scale,
                 void* workspace, size_t workspace_bytes, void* stream_ptr) {
  if (!q || !k || !v || !o || !qs || !ks || !vs || !os) return fail(CS_ERR_INVALID, "null tensor or stride pointer");
  if (dtype != 0 && dtype != 1) return fail(CS_ERR_INVALID, "dtype: expected 0 (fp16) or 1 (bf16), got %d", dtype);
  if (!valid_pv(pv_mode)) return fail(CS_ERR_INVALID, "pv_mode: expected 0..%d, got %d", cs::kNumPV - 1, pv_mode);
  if (!valid_gran(granularity)) return fail(CS_ERR_INVALID, "granularity: expected 0..2, got %d", granularity);
  if (head_dim != 64 && head_dim != 128) return fail(CS_ERR_INVALID, "head_dim: expected 64|128, got %d", head_dim);
  if (B <= 0 || Hq <= 0 || Hkv <= 0 || Lq <= 0 || Lk <= 0) return fail(CS_ERR_INVALID, "sizes must be positive");
  if (Hq % Hkv) return fail(CS_ERR_INVALID, "Hq (%d) must be a multiple of Hkv (%d)", Hq, Hkv);
  // The kernels take the row max of the raw scores before scaling (attn_w32.cuh): the scale must be > 0.
  if (!(sm_scale > 0.f) || !std::isfinite(sm_scale)) return fail(CS_ERR_INVALID, "sm_scale: expected a positive finite number, got %g", (double)sm_scale);
  if (B > 65535 || Hq > 65535) return fail(CS_ERR_INVALID, "B and Hq must be <= 65535");
  const void* ptrs[4] = {q, k, v, o};
  const int64_t* strides[4] = {qs, ks, vs, os};
  for (int i = 0; i < 4; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16) return fail(CS_ERR_INVALID, "tensor %d: base not 16-byte aligned", i);
    for (int j = 0; j < 3; ++j)
      if (strides[i][j] % 8) return fail(CS_ERR_INVALID, "tensor %d: stride %d (%lld) not a multiple of 8", i, j, (long long)strides[i][j]);
  }
  const cs::PV pv = static_cast<cs::PV>(pv_mode);
  const cs::Gran gr = static_cast<cs::Gran>(granularity);
  int arch = 0;
  if (int rc = device_arch(&arch)) return rc;
  if (!cs_variant_supported(pv_mode, head_dim, arch))
    return fail(CS_ERR_UNSUPPORTED, "variant int8qk-%spv (head_dim %d) is not available on sm_%d in this build (built for %s)",
                pv_name(pv_mode), head_dim, arch, CS_ARCHS);
  const Layout L = layout(B, Hq, Hkv, Lq, Lk, head_dim, pv, gr, smooth_k != 0, lse != nullptr);
  if (!workspace || workspace_bytes < L.total)
    return fail(CS_ERR_WORKSPACE, "workspace: need %zu bytes, got %zu", L.total, workspace_bytes);
  char* ws = static_cast<char*>(workspace);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int bf16 = dtype;
  const int D = head_dim;
  const int lqp = cs::pad_q(Lq), lkp = cs::pad_k(Lk);
  cudaError_t err = cudaSuccess;
  auto cuda_fail = [&](const char* what) {
    return fail(CS_ERR_CUDA, "%s (variant int8qk-%spv, head_dim %d, sm_%d): %s", what, pv_name(pv_mode), D, arch,
                cudaGetErrorString(err));
  };

  float* kmean = smooth_k ? reinterpret_cast<float*>(ws + L.kmean) : nullptr;
  if (smooth_k) {
    err = cs::launch_k_mean(k, ks[0], ks[1], ks[2], bf16, B, Hkv, Lk, D, reinterpret_cast<float*>(ws + L.kpart), kmean, stream);
    if (err != cudaSuccess) return cuda_fail("K mean");
  }
  cs::QuantParams qp{};
  qp.x = q; qp.sb = qs[0]; qp.sh = qs[1]; qp.sn = qs[2]; qp.in_bf16 = bf16;
  qp.B = B; qp.H = Hq; qp.N = Lq; qp.N_pad = lqp; qp.D = D;
  qp.tile_rows = cs::q_scale_rows(gr); qp.groups = cs::q_scale_groups(gr);
  qp.out = reinterpret_cast<int8_t*>(ws + L.q8); qp.scale = reinterpret_cast<float*>(ws + L.qs);
  qp.mean = nullptr;
  const bool corr = smooth_k && lse != nullptr;
  qp.kmean = corr ? kmean : nullptr; qp.corr = corr ? reinterpret_cast<float*>(ws + L.corr) : nullptr;
  qp.head_group = Hq / Hkv; qp.sm_scale = sm_scale;
  if ((err = cs::launch_quant_int8(qp, stream)) != cudaSuccess) return cuda_fail("Q quantization");

  cs::QuantParams kp{};
  kp.x = k; kp.sb = ks[0]; kp.sh = ks[1]; kp.sn = ks[2]; kp.in_bf16 = bf16;
  kp.B = B; kp.H = Hkv; kp.N = Lk; kp.N_pad = lkp; kp.D = D;
  kp.tile_rows = cs::kTiles.blk_k; kp.groups = cs::k_scale_groups(gr);
  kp.out = reinterpret_cast<int8_t*>(ws + L.k8); kp.scale = reinterpret_cast<float*>(ws + L.ks);
  kp.mean = kmean; kp.kmean = nullptr; kp.corr = nullptr; kp.head_group = 1; kp.sm_scale = 0.f;
  if ((err = cs::launch_quant_int8(kp, stream)) != cudaSuccess) return cuda_fail("K quantization");

  if (cs::pv_is_8bit(pv)) {
    err = cs::launch_v_8bit(pv, v, vs[0], vs[1], vs[2], bf16, B, Hkv, Lk, lkp, D, reinterpret_cast<unsigned*>(ws + L.vamax),
                            reinterpret_cast<float*>(ws + L.vscale), ws + L.v, stream);
  } else {
    err = cs::launch_v_f16(v, vs[0], vs[1], vs[2], bf16, B, Hkv, Lk, lkp, D, ws + L.v, stream);
  }
  if (err != cudaSuccess) return cuda_fail("V quantization");

  cs::AttnParams ap{};
  ap.q8 = reinterpret_cast<const int8_t*>(ws + L.q8); ap.q_scale = reinterpret_cast<const float*>(ws + L.qs);
  ap.k8 = reinterpret_cast<const int8_t*>(ws + L.k8); ap.k_scale = reinterpret_cast<const float*>(ws + L.ks);
  ap.v = ws + L.v; ap.v_scale = reinterpret_cast<const float*>(ws + L.vscale);
  ap.o = o; ap.o_sb = os[0]; ap.o_sh = os[1]; ap.o_sn = os[2]; ap.out_bf16 = bf16;
  ap.lse = lse; ap.lse_corr = corr ? reinterpret_cast<const float*>(ws + L.corr) : nullptr;
  ap.B = B; ap.Hq = Hq; ap.Hkv = Hkv; ap.Lq = Lq; ap.Lk = Lk; ap.Lq_pad = lqp; ap.Lk_pad = lkp;
  ap.causal = is_causal ? 1 : 0;
  ap.sm_scale_log2 = sm_scale * 1.4426950408889634f;
  ap.q_scale_rows = cs::q_scale_rows(gr); ap.q_groups = cs::q_scale_groups(gr);
  ap.q_scales_per_head = cs::q_scales_per_head(gr, Lq);
  ap.k_groups = cs::k_scale_groups(gr); ap.k_scales_per_head = cs::k_scales_per_head(gr, Lk);
  if ((err = attn_launcher(D, pv)(ap, stream)) != cudaSuccess) return cuda_fail("attention kernel");
  return CS_OK;
}

}  // extern "C"
