"""The triton backend: INT8 Q·Kᵀ (any reference granularity, K smoothing) with FP8 or FP16 P·V.

Portable across the NVIDIA GPUs Triton supports (INT8 dot: sm80+; FP8 e4m3 dot: sm89+); on
Hopper Triton issues wgmma for both products. Wrapped as one ``torch.library`` custom op so
``torch.compile`` graphs (ComfyUI's TorchCompileModel) trace through it.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from ..config import PVMode, QKGranularity, QKQuant, TensorLayout, Tiles
from ..reference import P_SCALE, V_TARGET
from .base import Call

_MISSING = None if importlib.util.find_spec("triton") else "Triton is not installed (pip install triton)"
NATIVE_HEAD_DIMS = (64, 128)
# Launch configuration of the attention kernel per P·V mode, the fastest of bench/triton_tune.py's
# sweep at the Wan 14B shape on the H200 (bench/results/2026-11-22-h200-triton-tune.json:
# fp8 621 TOPS with 64x128 tiles and one warpgroup; fp16 431 TFLOPS with 128x64; Triton's warp
# specialization gained nothing or failed to compile). BLOCK_N is the tiles' blk_k.
LAUNCH = {
    PVMode.FP8: {"BLOCK_M": 64, "num_warps": 4, "num_stages": 3, "WARP_SPECIALIZE": False},
    PVMode.FP16: {"BLOCK_M": 128, "num_warps": 4, "num_stages": 3, "WARP_SPECIALIZE": False},
}
# Quantization groups: Q per-thread groups over 32-row warp tiles, K over the KV block. The
# kernel's KV block (BLOCK_N) is blk_k, so FP8 P sees the reference's running max exactly.
# Rows one quantization program handles (whole tiles; at least this many).
QUANT_ROWS = 64
TILES = {PVMode.FP8: Tiles(blk_q=128, warp_q=32, blk_k=128), PVMode.FP16: Tiles(blk_q=128, warp_q=32, blk_k=64)}
_PV_MODES = {PVMode.FP8: "fp8", PVMode.FP16: "fp16"}
_FP8_CAPABILITY = (8, 9)  # e4m3 tensor-core dot


def _capability(device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


class TritonBackend:
    name = "triton"

    def availability(self) -> Optional[str]:
        if _MISSING:
            return _MISSING
        if not torch.cuda.is_available():
            return "needs a CUDA GPU (Triton kernels run on NVIDIA GPUs only)"
        if _capability(None) < (8, 0):
            return "needs compute capability 8.0 or newer (INT8 tensor-core dot)"
        return None

    def variants(self, device: torch.device) -> list[str]:
        device = torch.device(device)
        if device.type != "cuda" or self.availability() is not None:
            return []
        names = ["int8qk-fp16pv"]
        if _capability(device) >= _FP8_CAPABILITY:
            names.insert(0, "int8qk-fp8pv")
        return names

    def tiles(self, cfg, head_dim: int, device: torch.device) -> Tiles:
        return TILES.get(cfg.pv_mode, cfg.tiles)

    def unsupported(self, q, k, v, call: Call) -> Optional[str]:
        cfg = call.cfg
        if q.device.type != "cuda":
            return f"the triton backend runs on CUDA tensors, got {q.device.type}"
        if call.head_dim not in NATIVE_HEAD_DIMS:
            return f"head dim {call.head_dim} (after padding); the triton backend runs 64 and 128"
        if cfg.qk_quant is not QKQuant.INT8:
            return f"qk_quant={cfg.qk_quant.value}; the triton backend runs int8"
        if cfg.pv_mode not in _PV_MODES:
            return f"pv_mode={cfg.pv_mode.value}; the triton backend runs {'|'.join(_PV_MODES.values())}"
        if cfg.pv_mode is PVMode.FP8 and _capability(q.device) < _FP8_CAPABILITY:
            return "FP8 P·V needs compute capability 8.9 or newer"
        if cfg.smooth_q:
            return "smooth_q is not implemented in the triton backend"
        tiles = cfg.tiles
        for name in ("blk_q", "warp_q", "blk_k"):
            value = getattr(tiles, name)
            if value & (value - 1):
                return f"tiles.{name}={value}; the triton backend needs powers of two"
        if tiles.blk_k not in (32, 64, 128):
            return f"tiles.blk_k={tiles.blk_k}; the triton backend's KV block is 32, 64 or 128"
        return None

    def run(self, q, k, v, call: Call):
        cfg = call.cfg
        out, lse = torch.ops.comfy_sage.triton_attention(
            q, k, v, call.layout is TensorLayout.NHD, call.is_causal, call.sm_scale, call.return_lse,
            _PV_MODES[cfg.pv_mode], cfg.granularity.value, cfg.smooth_k,
            cfg.tiles.blk_q, cfg.tiles.warp_q, cfg.tiles.blk_k,
        )
        return (out, lse) if call.return_lse else out


@torch.library.custom_op("comfy_sage::triton_attention", mutates_args=())
def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, nhd: bool, is_causal: bool, sm_scale: float,
    return_lse: bool, pv_mode: str, granularity: str, smooth_k: bool, blk_q: int, warp_q: int, blk_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    n_axis, h_axis = (1, 2) if nhd else (2, 1)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[0], q.shape[h_axis], q.shape[n_axis] if return_lse else 0,
                      dtype=torch.float32, device=q.device)
    launch(q, k, v, out, lse, nhd, is_causal, sm_scale, pv_mode, granularity, smooth_k, blk_q, warp_q, blk_k)
    return out, lse


def launch(q, k, v, out, lse, nhd: bool, is_causal: bool, sm_scale: float, pv_mode: str, granularity: str,
           smooth_k: bool, blk_q: int, warp_q: int, blk_k: int) -> None:
    """Quantize and attend, writing ``out`` (q's shape and strides) and, when it has
    tokens, ``lse`` (B, Hq, Lq). Separate from the op so tests can hand in poisoned buffers."""
    from . import triton_kernels as K

    n_axis, h_axis = (1, 2) if nhd else (2, 1)
    b, hq, n_q, d = q.shape[0], q.shape[h_axis], q.shape[n_axis], q.shape[3]
    hk, n_kv = k.shape[h_axis], k.shape[n_axis]
    return_lse = lse.numel() > 0
    gran = QKGranularity(granularity)

    def strides(x):  # (batch, head, token) strides in either layout
        return x.stride(0), x.stride(h_axis), x.stride(n_axis)

    device = q.device
    k_mean = (k.mean(dim=n_axis, dtype=torch.float32) if smooth_k
              else torch.zeros(b, hk, d, device=device, dtype=torch.float32)).contiguous()  # (B, Hk, D)
    q_q = torch.empty(b, hq, n_q, d, dtype=torch.int8, device=device)
    k_q = torch.empty(b, hk, n_kv, d, dtype=torch.int8, device=device)
    q_scale = torch.empty(b, hq, n_q, dtype=torch.float32, device=device)
    k_scale = torch.empty(b, hk, n_kv, dtype=torch.float32, device=device)
    qk_mean = torch.empty(b, hq, n_q if return_lse else 1, dtype=torch.float32, device=device)

    for x, x_q, scale, is_q in ((q, q_q, q_scale, True), (k, k_q, k_scale, False)):
        n, heads = (n_q, hq) if is_q else (n_kv, hk)
        mode, tile = _grouping(gran, is_q, blk_q, warp_q, blk_k)
        block = tile * max(1, QUANT_ROWS // tile)
        K.quant_rows[(triton_cdiv(n, block), b * heads)](
            x, x_q, scale, k_mean, qk_mean, n, heads, hk, *strides(x),
            MODE=mode, TILE=tile, BLOCK=block, HEAD_DIM=d, QMAX=127,
            SUBTRACT_MEAN=(not is_q) and smooth_k, WRITE_QK_MEAN=is_q and return_lse,
            num_warps=4,
        )

    fp8 = pv_mode == "fp8"
    if fp8:
        n_pad = triton_cdiv(n_kv, blk_k) * blk_k
        v_amax = torch.maximum(v.amax(dim=n_axis), -v.amin(dim=n_axis)).float()  # (B, Hk, D), no |V| copy
        v_scale = torch.where(v_amax > 0, v_amax / V_TARGET[PVMode.FP8], torch.ones_like(v_amax)).contiguous()
        v_op = torch.empty(b, hk, d, n_pad, dtype=torch.float8_e4m3fn, device=device)
        K.quant_v_fp8[(n_pad // blk_k, b * hk)](v, v_op, v_scale, n_kv, n_pad, hk, *strides(v),
                                                 BLOCK=blk_k, HEAD_DIM=d, num_warps=4)
        v_strides = (hk * d * n_pad, d * n_pad, 1, n_pad)
    else:
        v_op, v_scale = v, k_mean  # v_scale unused on the fp16 path
        v_strides = (*strides(v), 1)
    launch_cfg = LAUNCH[PVMode(pv_mode)]
    K.attention[(triton_cdiv(n_q, launch_cfg["BLOCK_M"]), b * hq)](
        q_q, q_scale, k_q, k_scale, v_op, v_scale, qk_mean, out, lse,
        n_q, n_kv, hq, hk, sm_scale * K.LOG2E, sm_scale,
        *v_strides, *strides(out),
        HEAD_DIM=d, BLOCK_N=blk_k, CAUSAL=is_causal, PV_FP8=fp8, P_SCALE=P_SCALE[PVMode.FP8],
        WRITE_LSE=return_lse, **launch_cfg,
    )


@triton_attention.register_fake
def _(q, k, v, nhd, is_causal, sm_scale, return_lse, pv_mode, granularity, smooth_k, blk_q, warp_q, blk_k):
    n_axis, h_axis = (1, 2) if nhd else (2, 1)
    lse = q.new_empty((q.shape[0], q.shape[h_axis], q.shape[n_axis] if return_lse else 0), dtype=torch.float32)
    return torch.empty_like(q), lse


def _grouping(gran: QKGranularity, is_q: bool, blk_q: int, warp_q: int, blk_k: int):
    """(mode, tile) for quant_rows: the grouping of ``quant.q_groups`` / ``quant.k_groups``."""
    from . import triton_kernels as K

    if gran is QKGranularity.PER_THREAD:
        return (K.ROWS_Q_THREAD, warp_q) if is_q else (K.ROWS_K_THREAD, blk_k)
    return K.ROWS_BLOCK, ((warp_q if gran is QKGranularity.PER_WARP else blk_q) if is_q else blk_k)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


BACKEND = TritonBackend()
