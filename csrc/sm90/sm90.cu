// Launch sequence of the Hopper family: K/V statistics, Q and K/V quantization into the layouts
// the tensor maps describe, then the warp-specialized attention kernel. Host code returns codes.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <algorithm>
#include <mutex>
#include <type_traits>
#include "comfy_sage.h"
#include "sm90/sm90.h"
#include "sm90/kernel.cuh"
#include "sm90/quant.cuh"

namespace cs { namespace sm90 {

constexpr int kOk = CS_OK, kErrInvalid = CS_ERR_INVALID, kErrUnsupported = CS_ERR_UNSUPPORTED, kErrCuda = CS_ERR_CUDA,
              kErrWorkspace = CS_ERR_WORKSPACE;

size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }
int pad_to(int x, int m) { return (x + m - 1) / m * m; }

struct Layout {
  size_t q8, qs, k8, ks, vt, vs, vinv, kmean, part_k, part_v, tickets, corr, total;
  int q_spr, k_spr, lk_pad, n_chunks, chunk;
};

Layout layout(int B, int Hq, int Hkv, int Lq, int Lk, int D, bool lse, PV pv) {
  Layout l{};
  l.q_spr = (Lq + kQRows - 1) / kQRows * 8;
  const int blk = key_block(pv);
  l.k_spr = (Lk + blk - 1) / blk * 4;
  l.lk_pad = pad_to(Lk, blk);
  // K/V statistics: about 8 CTAs per SM (loads in flight), at most 64 chunks per head (the last CTA
  // of a head folds them in order).
  const int want = pad_to((Lk + 63) / 64, 1);
  l.n_chunks = std::min(64, std::max(1, std::min(want, (1056 + B * Hkv - 1) / (B * Hkv))));
  l.chunk = pad_to((Lk + l.n_chunks - 1) / l.n_chunks, 16);
  l.n_chunks = (Lk + l.chunk - 1) / l.chunk;
  size_t off = 0;
  auto take = [&](size_t bytes) { const size_t o = off; off = align_up(off + bytes); return o; };
  const size_t bq = size_t(B) * Hq, bk = size_t(B) * Hkv;
  l.q8 = take(bq * Lq * D);
  l.qs = take(sizeof(float) * bq * l.q_spr);
  l.k8 = take(bk * Lk * D);
  l.ks = take(sizeof(float) * bk * l.k_spr);
  l.vt = take(bk * D * l.lk_pad * vt_bytes(pv));
  l.vs = take(sizeof(float) * bk * D);
  l.vinv = take(sizeof(float) * bk * D);
  l.kmean = take(sizeof(float) * bk * D);
  l.part_k = take(sizeof(float) * bk * l.n_chunks * D);
  l.part_v = take(sizeof(float) * bk * l.n_chunks * D);
  l.tickets = take(sizeof(unsigned) * bk);
  l.corr = take(lse ? sizeof(float) * bq * Lq : 0);
  l.total = off;
  return l;
}

using EncodeFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                              const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled through the runtime's driver entry point: no -lcuda at link time.
EncodeFn encode_fn() {
  static EncodeFn fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeFn>(ptr);
  });
  return fn;
}

// A 3-D byte tensor (inner, rows, heads) with row pitch `pitch` bytes, read in boxes of
// (box_inner, box_rows, 1) into a swizzled K-major tile.
bool make_map(CUtensorMap* map, void* base, uint64_t inner, uint64_t rows, uint64_t heads, uint64_t pitch,
              uint32_t box_inner, uint32_t box_rows) {
  EncodeFn fn = encode_fn();
  if (!fn) return false;
  const cuuint64_t dims[3] = {inner, rows, heads};
  const cuuint64_t strides[2] = {pitch, pitch * rows};
  const cuuint32_t box[3] = {box_inner, box_rows, 1};
  const cuuint32_t estr[3] = {1, 1, 1};
  const CUtensorMapSwizzle sw = box_inner == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  return fn(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, base, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int D, PV MODE>
cudaError_t launch_all(const Layout& L, char* ws, const void* q, const void* k, const void* v, void* o, float* lse,
                       int bf16, int B, int Hq, int Hkv, int Lq, int Lk, const int64_t* qs, const int64_t* ks,
                       const int64_t* vs, const int64_t* os, int gran, int smooth_k, int causal, float sm_scale,
                       cudaStream_t st, bool* map_failed) {
  const int bq = B * Hq, bk = B * Hkv;
  auto f32 = [&](size_t off) { return reinterpret_cast<float*>(ws + off); };
  cudaError_t e = cudaMemsetAsync(ws + L.tickets, 0, sizeof(unsigned) * bk, st);
  if (e != cudaSuccess) return e;

  KVStatsParams sp{};
  sp.k = k; sp.v = v;
  sp.ksb = ks[0]; sp.ksh = ks[1]; sp.ksn = ks[2]; sp.vsb = vs[0]; sp.vsh = vs[1]; sp.vsn = vs[2];
  sp.in_bf16 = bf16; sp.H = Hkv; sp.L = Lk; sp.chunk = L.chunk; sp.n_chunks = L.n_chunks;
  sp.part_k = f32(L.part_k); sp.part_v = f32(L.part_v); sp.kmean = f32(L.kmean); sp.v_scale = f32(L.vs); sp.v_inv = f32(L.vinv);
  sp.smooth_k = smooth_k;
  sp.v_max = pv_v_target(MODE, key_block(MODE));
  kv_stats_kernel<D><<<dim3(L.n_chunks, bk), 256, 0, st>>>(sp, reinterpret_cast<unsigned*>(ws + L.tickets));

  QuantQParams qp{};
  qp.x = q; qp.sb = qs[0]; qp.sh = qs[1]; qp.sn = qs[2];
  qp.in_bf16 = bf16; qp.H = Hq; qp.L = Lq; qp.spr = L.q_spr; qp.gran = gran;
  qp.out = reinterpret_cast<int8_t*>(ws + L.q8); qp.scale = f32(L.qs);
  qp.kmean = (lse && smooth_k) ? f32(L.kmean) : nullptr; qp.corr = f32(L.corr);
  qp.group = Hq / Hkv; qp.Hkv = Hkv; qp.sm_scale = sm_scale;
  quant_q_kernel<D><<<dim3((Lq + kQuantRowsQ - 1) / kQuantRowsQ, bq), 256, 0, st>>>(qp);

  QuantKVParams kp{};
  kp.k = k; kp.v = v;
  kp.ksb = ks[0]; kp.ksh = ks[1]; kp.ksn = ks[2]; kp.vsb = vs[0]; kp.vsh = vs[1]; kp.vsn = vs[2];
  kp.in_bf16 = bf16; kp.H = Hkv; kp.L = Lk; kp.L_pad = L.lk_pad; kp.spr = L.k_spr; kp.gran = gran;
  kp.kmean = smooth_k ? f32(L.kmean) : nullptr; kp.v_scale = f32(L.vs); kp.v_inv = f32(L.vinv);
  kp.k8 = reinterpret_cast<int8_t*>(ws + L.k8); kp.k_scale = f32(L.ks); kp.vt = reinterpret_cast<uint8_t*>(ws + L.vt);
  using KVS = QuantKVSmem<D, MODE>;
  constexpr int blk = key_block(MODE);
  if ((e = cudaFuncSetAttribute(quant_kv_kernel<D, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, KVS::bytes)) !=
      cudaSuccess)
    return e;
  quant_kv_kernel<D, MODE><<<dim3((Lk + blk - 1) / blk, bk), KVS::kThreads, KVS::bytes, st>>>(kp);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  CUtensorMap tq, tk, tv;
  constexpr int vb = vt_bytes(MODE);  // Vᵀ: rows of Lk_pad e4m3 or f16, read in bytes, one box per sub-tile
  if (!make_map(&tq, ws + L.q8, D, Lq, bq, D, D, kBlockM) || !make_map(&tk, ws + L.k8, D, Lk, bk, D, D, blk) ||
      !make_map(&tv, ws + L.vt, vb * L.lk_pad, D, bk, vb * L.lk_pad, SmemLayout<D, MODE>::kSubRow, D)) {
    *map_failed = true;
    return cudaSuccess;
  }
  AttnParams ap{};
  ap.q_scale = f32(L.qs); ap.k_scale = f32(L.ks); ap.v_scale = f32(L.vs);
  ap.lse_corr = (lse && smooth_k) ? f32(L.corr) : nullptr;
  ap.o = o; ap.o_sb = os[0]; ap.o_sh = os[1]; ap.o_sn = os[2]; ap.lse = lse;
  ap.Hq = Hq; ap.Hkv = Hkv; ap.group = Hq / Hkv; ap.Lq = Lq; ap.Lk = Lk;
  ap.q_spr = L.q_spr; ap.k_spr = L.k_spr;
  ap.n_mtiles = (Lq + kBlockM - 1) / kBlockM;
  ap.causal = causal; ap.out_bf16 = bf16;
  ap.sm_scale_log2 = sm_scale * 1.4426950408889634f;
  constexpr int smem = SmemLayout<D, MODE>::bytes;
  // Every call (about a microsecond): the attribute is per device, and a process may use several.
  if ((e = cudaFuncSetAttribute(attn_sm90_kernel<D, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) !=
      cudaSuccess)
    return e;
  attn_sm90_kernel<D, MODE><<<dim3(ap.n_mtiles, bq), kThreads, smem, st>>>(tq, tk, tv, ap);
  return cudaGetLastError();
}


TileShape tiles(int /*head_dim*/, PV mode, int /*arch*/) {
  return TileShape{/*blk_q=*/kQuantRowsQ, /*warp_q=*/kQRows, /*blk_k=*/key_block(mode)};
}

size_t workspace_bytes(const AttnArgs& a) {
  return layout(a.B, a.Hq, a.Hkv, a.Lq, a.Lk, a.head_dim, a.lse != nullptr, a.pv).total;
}

int attention(const AttnArgs& a, void* workspace, size_t ws_bytes, cudaStream_t stream, char* err, size_t err_len) {
  auto fail = [&](int code, const char* msg, const char* detail = "") {
    if (err && err_len) snprintf(err, err_len, "%s%s", msg, detail);
    return code;
  };
  if (a.pv != PV::FP8 && a.pv != PV::FP8_ACC16 && a.pv != PV::FP16)
    return fail(kErrUnsupported, "P·V in FP8 (int8qk-fp8pv, int8qk-fp8-acc16pv) or FP16 (int8qk-fp16pv) only");
  if (a.head_dim != 64 && a.head_dim != 128) return fail(kErrUnsupported, "head_dim must be 64 or 128");
  const Layout L = layout(a.B, a.Hq, a.Hkv, a.Lq, a.Lk, a.head_dim, a.lse != nullptr, a.pv);
  if (!workspace || ws_bytes < L.total) return fail(kErrWorkspace, "workspace too small");
  if (reinterpret_cast<uintptr_t>(workspace) % 16) return fail(kErrInvalid, "workspace not 16-byte aligned (TMA)");
  bool map_failed = false;
  auto pick = [&](auto d) {
    constexpr int D = decltype(d)::value;
    return a.pv == PV::FP8 ? launch_all<D, PV::FP8> : a.pv == PV::FP8_ACC16 ? launch_all<D, PV::FP8_ACC16> : launch_all<D, PV::FP16>;
  };
  const auto launch = a.head_dim == 64 ? pick(std::integral_constant<int, 64>{}) : pick(std::integral_constant<int, 128>{});
  const cudaError_t e = launch(
      L, static_cast<char*>(workspace), a.q, a.k, a.v, a.o, a.lse, a.bf16, a.B, a.Hq, a.Hkv, a.Lq, a.Lk, a.q_strides,
      a.k_strides, a.v_strides, a.o_strides, static_cast<int>(a.gran), a.smooth_k, a.causal, a.sm_scale, stream,
      &map_failed);
  if (map_failed) return fail(kErrCuda, "cuTensorMapEncodeTiled unavailable or rejected a tensor map");
  if (e != cudaSuccess) return fail(kErrCuda, "launch failed: ", cudaGetErrorString(e));
  return kOk;
}

}}  // namespace cs::sm90

// Standalone entry points for the development harness (bench/sm90_bench.py builds csrc/sm90/sm90.cu
// alone into its own library; the package reaches the family through cs_attention).
extern "C" {
__attribute__((visibility("default"))) size_t cs_sm90_workspace_bytes(int B, int Hq, int Hkv, int Lq, int Lk, int D,
                                                                     int return_lse, int pv_mode) {
  return cs::sm90::layout(B, Hq, Hkv, Lq, Lk, D, return_lse != 0, static_cast<cs::PV>(pv_mode)).total;
}
// The key block of a P·V mode (params.h key_block): the harness's reference tiles follow it.
__attribute__((visibility("default"))) int cs_sm90_key_block(int pv_mode) {
  return cs::sm90::key_block(static_cast<cs::PV>(pv_mode));
}
__attribute__((visibility("default"))) int cs_sm90_attention(const void* q, const void* k, const void* v, void* o,
                                                             float* lse, int dtype, int B, int Hq, int Hkv, int Lq,
                                                             int Lk, int D, const int64_t* qs, const int64_t* ks,
                                                             const int64_t* vs, const int64_t* os, int gran,
                                                             int smooth_k, int is_causal, float sm_scale,
                                                             void* workspace, size_t ws_bytes, void* stream,
                                                             char* err, size_t err_len, int pv_mode) {
  cs::AttnArgs a{};
  a.q = q; a.k = k; a.v = v; a.o = o; a.lse = lse; a.bf16 = dtype;
  a.B = B; a.Hq = Hq; a.Hkv = Hkv; a.Lq = Lq; a.Lk = Lk; a.head_dim = D;
  a.q_strides = qs; a.k_strides = ks; a.v_strides = vs; a.o_strides = os;
  a.pv = static_cast<cs::PV>(pv_mode); a.gran = static_cast<cs::Gran>(gran); a.smooth_k = smooth_k != 0; a.causal = is_causal != 0;
  a.sm_scale = sm_scale; a.arch = 90; a.family = cs::Family::SM90;
  return cs::sm90::attention(a, workspace, ws_bytes, static_cast<cudaStream_t>(stream), err, err_len);
}
}
