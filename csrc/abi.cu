// The C ABI and the one kernel dispatch point: argument checks, then the family that runs a call
// (resolve_family: from the caller's explicit choice and the device's compute capability), its
// tiles and configuration, handed to the family's pipeline (common/pipeline.h), which lays out
// the workspace and launches. Host code only returns codes; it never exits, asserts or
// synchronizes the device. The table of compiled kernels is instances.h, generated from
// configs.json.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include "comfy_sage.h"
#include "common/types.h"
#include "common/scales.h"
#include "common/pipeline.h"
#include "instances.h"

namespace {

using cs::Family;
using cs::PV;

static_assert(CS_FAMILY_AUTO == int(Family::AUTO) && CS_FAMILY_W16 == int(Family::W16) &&
                  CS_FAMILY_W32 == int(Family::W32) && CS_FAMILY_SM90 == int(Family::SM90),
              "comfy_sage.h and common/types.h disagree on the family codes");

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
const char* family_name(Family f) {
  static const char* names[] = {"auto", "w16", "w32", "sm90"};
  return names[int(f)];
}

bool valid_pv(int m) { return m >= 0 && m < cs::kNumPV; }
bool valid_gran(int g) { return g >= 0 && g < cs::kNumGran; }
bool valid_family(int f) { return f >= 0 && f < cs::kNumFamily; }

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

// ---- the dispatch table (instances.h, generated from configs.json) ----

using TilesFn = cs::TileShape (*)(int head_dim, PV mode, int arch);
using WorkspaceFn = size_t (*)(const cs::AttnArgs&);
using AttentionFn = int (*)(const cs::AttnArgs&, void*, size_t, cudaStream_t, char*, size_t);

struct Instance {
  Family family;
  int head_dim;
  PV pv;
  cs::Launcher launch;
};
const Instance kInstances[] = {
#define CS_INSTANCE(F, D, M, LAUNCHER) {Family::F, D, PV::M, LAUNCHER},
    CS_FOR_EACH_INSTANCE(CS_INSTANCE)
#undef CS_INSTANCE
};

constexpr int kMaxArchs = 8;
struct FamilyInfo {
  Family family;
  TilesFn tiles;
  WorkspaceFn workspace_bytes;
  AttentionFn attention;
  int archs[kMaxArchs];  // the arches its kernels are written for, 0-terminated
};
const FamilyInfo kFamilies[] = {
#define CS_FAMILY(F, TILES, NS, ...) {Family::F, &TILES, &NS::workspace_bytes, &NS::attention, {__VA_ARGS__}},
    CS_FOR_EACH_FAMILY(CS_FAMILY)
#undef CS_FAMILY
};

const Family kAutoOrder[] = {
#define CS_AUTO(F) Family::F,
    CS_FOR_EACH_AUTO(CS_AUTO)
#undef CS_AUTO
};

const FamilyInfo* family_info(Family f) {
  for (const FamilyInfo& i : kFamilies)
    if (i.family == f) return &i;
  return nullptr;
}

const Instance* find_instance(Family f, int head_dim, PV pv) {
  for (const Instance& i : kInstances)
    if (i.family == f && i.head_dim == head_dim && i.pv == pv) return &i;
  return nullptr;
}

// Why family f cannot run (pv, head_dim) on arch, written to why; false when it can.
bool cannot_run(Family f, PV pv, int head_dim, int arch, char* why, size_t n) {
  const FamilyInfo* info = family_info(f);
  if (info == nullptr) {
    snprintf(why, n, "family %s has no kernels in this build", family_name(f));
    return true;
  }
  bool runs = false;
  for (int a : info->archs) runs |= a == arch;
  if (!runs) {
    snprintf(why, n, "family %s does not run on sm_%d", family_name(f), arch);
    return true;
  }
  if (!built_for(arch)) {
    snprintf(why, n, "this build has no code for sm_%d (built for %s)", arch, CS_ARCHS);
    return true;
  }
  if (arch < cs::pv_min_arch(pv)) {
    snprintf(why, n, "P·V mode %s needs sm_%d or newer, the device is sm_%d", pv_name(int(pv)), cs::pv_min_arch(pv), arch);
    return true;
  }
  if (find_instance(f, head_dim, pv) == nullptr) {
    snprintf(why, n, "family %s has no kernel for P·V mode %s at head dim %d", family_name(f), pv_name(int(pv)), head_dim);
    return true;
  }
  return false;
}

// The one place a family is chosen. AUTO: the first family of configs.json's auto_order that
// can run the call on this arch; an explicit family runs or the call fails.
int resolve_family(int family, int pv_mode, int head_dim, int arch, Family* out) {
  if (!valid_family(family)) return fail(CS_ERR_INVALID, "family: expected 0..%d, got %d", cs::kNumFamily - 1, family);
  if (!valid_pv(pv_mode)) return fail(CS_ERR_INVALID, "pv_mode: expected 0..%d, got %d", cs::kNumPV - 1, pv_mode);
  if (head_dim != 64 && head_dim != 128) return fail(CS_ERR_INVALID, "head_dim: expected 64|128, got %d", head_dim);
  const PV pv = static_cast<PV>(pv_mode);
  char why[256] = "no kernel family in this build";
  if (family != int(Family::AUTO)) {
    if (cannot_run(static_cast<Family>(family), pv, head_dim, arch, why, sizeof(why)))
      return fail(CS_ERR_UNSUPPORTED, "variant int8qk-%spv: %s", pv_name(pv_mode), why);
    *out = static_cast<Family>(family);
    return CS_OK;
  }
  for (Family f : kAutoOrder) {
    if (!cannot_run(f, pv, head_dim, arch, why, sizeof(why))) {
      *out = f;
      return CS_OK;
    }
  }
  return fail(CS_ERR_UNSUPPORTED, "variant int8qk-%spv (head_dim %d) is not available on sm_%d: %s", pv_name(pv_mode),
              head_dim, arch, why);
}

int resolve_tiles(int family, int pv_mode, int head_dim, int arch, Family* f, cs::TileShape* t) {
  if (int rc = resolve_family(family, pv_mode, head_dim, arch, f)) return rc;
  *t = family_info(*f)->tiles(head_dim, static_cast<PV>(pv_mode), arch);
  // The quantization passes pad K/V in 64-token chunks and Q in groups of 8 rows.
  if (t->blk_k % 64 || t->blk_q % t->warp_q || t->warp_q % 16)
    return fail(CS_ERR_INVALID, "family %s: tiles %d/%d/%d do not fit the quantization passes", family_name(*f),
                t->blk_q, t->warp_q, t->blk_k);
  return CS_OK;
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

int cs_resolve_family(int family, int pv_mode, int head_dim, int arch, int* resolved) {
  if (!resolved) return fail(CS_ERR_INVALID, "cs_resolve_family: null output pointer");
  Family f = Family::AUTO;
  if (int rc = resolve_family(family, pv_mode, head_dim, arch, &f)) return rc;
  *resolved = int(f);
  return CS_OK;
}

int cs_query_tiles(int family, int pv_mode, int head_dim, int arch, int* blk_q, int* warp_q, int* blk_k) {
  if (!blk_q || !warp_q || !blk_k) return fail(CS_ERR_INVALID, "cs_query_tiles: null output pointer");
  Family f = Family::AUTO;
  cs::TileShape t{};
  if (int rc = resolve_tiles(family, pv_mode, head_dim, arch, &f, &t)) return rc;
  *blk_q = t.blk_q; *warp_q = t.warp_q; *blk_k = t.blk_k;
  return CS_OK;
}

int cs_scale_count(int family, int which, int granularity, int pv_mode, int n_tokens, int head_dim, int arch,
                   int64_t* count) {
  if (!valid_gran(granularity)) return fail(CS_ERR_INVALID, "granularity: expected 0..2, got %d", granularity);
  if (n_tokens <= 0) return fail(CS_ERR_INVALID, "n_tokens: expected > 0, got %d", n_tokens);
  if (!count) return fail(CS_ERR_INVALID, "cs_scale_count: null output pointer");
  Family f = Family::AUTO;
  cs::TileShape t{};
  if (int rc = resolve_tiles(family, pv_mode, head_dim, arch, &f, &t)) return rc;
  const cs::Gran g = static_cast<cs::Gran>(granularity);
  switch (which) {
    case 0: *count = cs::q_scales_per_head(g, n_tokens, t); return CS_OK;
    case 1: *count = cs::k_scales_per_head(g, n_tokens, t); return CS_OK;
    case 2: *count = cs::pv_is_8bit(static_cast<PV>(pv_mode)) ? head_dim : 0; return CS_OK;
  }
  return fail(CS_ERR_INVALID, "which: expected 0 (Q), 1 (K) or 2 (V), got %d", which);
}

int cs_variant_supported(int family, int pv_mode, int head_dim, int arch) {
  Family f = Family::AUTO;
  return resolve_family(family, pv_mode, head_dim, arch, &f) == CS_OK ? 1 : 0;
}

}  // extern "C"

namespace {

// The checked arguments of a call, with its family resolved (common/pipeline.h).
int make_args(int family, int dtype, int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int pv_mode,
              int granularity, int smooth_k, int smooth_v, int is_causal, float sm_scale, int arch, cs::AttnArgs* a) {
  if (dtype != 0 && dtype != 1) return fail(CS_ERR_INVALID, "dtype: expected 0 (fp16) or 1 (bf16), got %d", dtype);
  if (!valid_gran(granularity)) return fail(CS_ERR_INVALID, "granularity: expected 0..2, got %d", granularity);
  if (B <= 0 || Hq <= 0 || Hkv <= 0 || Lq <= 0 || Lk <= 0) return fail(CS_ERR_INVALID, "sizes must be positive");
  if (Hq % Hkv) return fail(CS_ERR_INVALID, "Hq (%d) must be a multiple of Hkv (%d)", Hq, Hkv);
  // The kernels take the row max of the raw scores before scaling (mainloop_w32.cuh): the scale must be > 0.
  if (!(sm_scale > 0.f) || !std::isfinite(sm_scale))
    return fail(CS_ERR_INVALID, "sm_scale: expected a positive finite number, got %g", (double)sm_scale);
  if (B > 65535 || Hq > 65535) return fail(CS_ERR_INVALID, "B and Hq must be <= 65535");
  Family f = Family::AUTO;
  cs::TileShape t{};
  if (int rc = resolve_tiles(family, pv_mode, head_dim, arch, &f, &t)) return rc;
  *a = cs::AttnArgs{};
  a->bf16 = dtype;
  a->B = B; a->Hq = Hq; a->Hkv = Hkv; a->Lq = Lq; a->Lk = Lk; a->head_dim = head_dim;
  a->pv = static_cast<PV>(pv_mode);
  a->gran = static_cast<cs::Gran>(granularity);
  a->smooth_k = smooth_k != 0;
  a->smooth_v = smooth_v != 0 && a->pv == PV::INT8;  // the mode whose error it fixes (csrc/NOTES.md)
  a->causal = is_causal != 0;
  a->sm_scale = sm_scale;
  a->arch = arch;
  a->family = f;
  a->tiles = t;
  a->launch = find_instance(f, head_dim, a->pv)->launch;
  return CS_OK;
}

}  // namespace

extern "C" {

int cs_workspace_bytes(int family, int B, int Hq, int Hkv, int Lq, int Lk, int head_dim, int pv_mode, int granularity,
                       int smooth_k, int smooth_v, int return_lse, int arch, size_t* bytes) {
  if (!bytes) return fail(CS_ERR_INVALID, "cs_workspace_bytes: null output pointer");
  cs::AttnArgs a{};
  // sm_scale does not size anything: any valid value.
  if (int rc = make_args(family, 0, B, Hq, Hkv, Lq, Lk, head_dim, pv_mode, granularity, smooth_k, smooth_v, 0, 1.f,
                         arch, &a))
    return rc;
  // A non-null lse makes the pipelines reserve its correction terms; never dereferenced here.
  static float lse_marker;
  a.lse = return_lse ? &lse_marker : nullptr;
  *bytes = family_info(a.family)->workspace_bytes(a);
  return CS_OK;
}

int cs_attention(int family, const void* q, const void* k, const void* v, void* o, float* lse, int dtype, int B,
                 int Hq, int Hkv, int Lq, int Lk, int head_dim, const int64_t* qs, const int64_t* ks,
                 const int64_t* vs, const int64_t* os, int pv_mode, int granularity, int smooth_k, int smooth_v,
                 int is_causal, float sm_scale, void* workspace, size_t workspace_bytes, void* stream) {
  if (!q || !k || !v || !o || !qs || !ks || !vs || !os) return fail(CS_ERR_INVALID, "null tensor or stride pointer");
  const void* ptrs[4] = {q, k, v, o};
  const int64_t* strides[4] = {qs, ks, vs, os};
  for (int i = 0; i < 4; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16) return fail(CS_ERR_INVALID, "tensor %d: base not 16-byte aligned", i);
    for (int j = 0; j < 3; ++j)
      if (strides[i][j] % 8) return fail(CS_ERR_INVALID, "tensor %d: stride %d (%lld) not a multiple of 8", i, j, (long long)strides[i][j]);
  }
  int arch = 0;
  if (int rc = device_arch(&arch)) return rc;
  cs::AttnArgs a{};
  if (int rc = make_args(family, dtype, B, Hq, Hkv, Lq, Lk, head_dim, pv_mode, granularity, smooth_k, smooth_v,
                         is_causal, sm_scale, arch, &a))
    return rc;
  a.q = q; a.k = k; a.v = v; a.o = o; a.lse = lse;
  a.q_strides = qs; a.k_strides = ks; a.v_strides = vs; a.o_strides = os;
  char why[400] = "";
  const int rc = family_info(a.family)->attention(a, workspace, workspace_bytes, static_cast<cudaStream_t>(stream), why,
                                                  sizeof(why));
  if (rc != CS_OK) return fail(rc, "family %s: %s", family_name(a.family), why);
  return CS_OK;
}

}  // extern "C"
