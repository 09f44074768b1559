"""``sageattn``: validation, layout and head-dim normalisation, backend choice.

Call-compatible with the ``sageattention`` package's ``sageattn(q, k, v, tensor_layout,
is_causal, sm_scale, return_lse)``, plus keyword-only options for the backend and the
quantization. Every input error names the argument, its value and what is supported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F

from . import backends, dispatch, log
from .backends.base import Call
from .config import (
    DEFAULT_VARIANT,
    MMA_TILES,
    PVMode,
    QKGranularity,
    QKQuant,
    QuantConfig,
    TensorLayout,
    Tiles,
    parse_variant,
)

BACKEND_CHOICES = ("auto",) + backends.NAMES
QUANTIZED_BACKENDS = ("cuda", "triton", "reference")
PADDED_HEAD_DIMS = (64, 128, 256)
MAX_HEAD_DIM = PADDED_HEAD_DIMS[-1]
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Aliases the sageattention package's functions use for the same options.
_GRANULARITY_ALIASES = {"per_thread": "per_thread", "per_warp": "per_warp", "per_block": "per_block"}


@dataclasses.dataclass(frozen=True)
class Selection:
    backend: str  # the backend sageattn will run
    variant: str  # its variant (a config.VARIANTS key, or an SDPA kernel name)
    reason: Optional[str]  # why a quantized backend was not used, when it was not


def sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    *,
    backend: str = "auto",
    variant: Optional[str] = None,
    qk_quant: Optional[str] = None,
    qk_granularity: Optional[str] = None,
    pv_mode: Optional[str] = None,
    smooth_k: bool = True,
    smooth_q: bool = False,
    tiles: Optional[Tiles] = None,
    attn_mask: Optional[torch.Tensor] = None,
    **kwargs,
):
    """Attention with quantized Q·Kᵀ and P·V.

    q: (B, Hq, Lq, D) for ``tensor_layout="HND"`` or (B, Lq, Hq, D) for ``"NHD"``; k, v: the
    same with Hk heads (Hq a multiple of Hk) and Lk tokens. float16 or bfloat16 (float32 is
    computed in bfloat16 and returned as float32). Head dims other than 64/128 are zero-padded
    to 64, 128 or 256; ``sm_scale`` defaults to 1/sqrt(D) of the unpadded D. Causal masking is
    top-left aligned, like torch SDPA. Returns the output in q's layout and dtype, plus the
    log-sum-exp (B, Hq, Lq) in float32 natural-log units when ``return_lse``.

    backend: ``auto`` (measured table, else SDPA), ``cuda``, ``triton``, ``reference``
    (the pure-PyTorch spec), ``sdpa``. variant: a ``config.VARIANTS`` name such as
    ``int8qk-fp8pv`` (quantized backends) or an SDPA kernel (``flash``, ``cudnn``, ...).
    qk_quant / qk_granularity / pv_mode override the variant's parts; smooth_k / smooth_q
    switch the smoothing; tiles sets the reference's quantization groups. attn_mask
    (bool or additive) runs only on SDPA: ``auto`` falls back to it, a quantized backend raises.
    """
    call, selection, orig_dtype, head_dim = _prepare(
        q, k, v, tensor_layout, is_causal, sm_scale, return_lse, backend, variant, qk_quant,
        qk_granularity, pv_mode, smooth_k, smooth_q, tiles, attn_mask, kwargs,
    )
    work_dtype = torch.bfloat16 if orig_dtype == torch.float32 else orig_dtype
    qp, kp, vp = (_pad_head_dim(x.to(work_dtype)) for x in (q, k, v))
    impl = backends.get(selection.backend)
    if selection.backend == "sdpa":
        result = impl.run(qp, kp, vp, call, attn_mask=attn_mask)
    else:
        result = impl.run(qp, kp, vp, call)
    out, lse = result if return_lse else (result, None)
    out = out[..., :head_dim].to(orig_dtype)
    return (out, lse) if return_lse else out


def select(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    *,
    backend: str = "auto",
    variant: Optional[str] = None,
    qk_quant: Optional[str] = None,
    qk_granularity: Optional[str] = None,
    pv_mode: Optional[str] = None,
    smooth_k: bool = True,
    smooth_q: bool = False,
    tiles: Optional[Tiles] = None,
    attn_mask: Optional[torch.Tensor] = None,
    **kwargs,
) -> Selection:
    """Which backend ``sageattn`` would run for these arguments, and why when it is not a
    quantized one. Validates exactly as ``sageattn`` does (same errors); launches nothing."""
    return _prepare(
        q, k, v, tensor_layout, is_causal, sm_scale, return_lse, backend, variant, qk_quant,
        qk_granularity, pv_mode, smooth_k, smooth_q, tiles, attn_mask, kwargs,
    )[1]


def _prepare(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, backend, variant, qk_quant,
             qk_granularity, pv_mode, smooth_k, smooth_q, tiles, attn_mask, kwargs):
    kwargs = dict(kwargs)
    if "qk_quant_gran" in kwargs:  # the sageattention package's name for the granularity
        qk_granularity = qk_granularity or kwargs.pop("qk_quant_gran")
    if kwargs:
        raise TypeError(f"sageattn: unexpected keyword argument(s) {sorted(kwargs)}")
    layout = TensorLayout.parse(tensor_layout, "tensor_layout")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend: expected one of {'|'.join(BACKEND_CHOICES)}, got {backend!r}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal: expected bool, got {type(is_causal).__name__}")
    head_dim, orig_dtype = _validate_tensors(q, k, v, layout)
    _validate_mask(attn_mask, q, k, layout)
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(head_dim)
    elif not (isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")

    cfg = _quant_config(variant if backend != "sdpa" else None, qk_quant, qk_granularity, pv_mode,
                        smooth_k, smooth_q, tiles)
    selection = _select_backend(backend, variant, cfg, q, k, layout, head_dim, attn_mask, is_causal)
    if tiles is None and selection.backend != "sdpa":
        cfg = dataclasses.replace(cfg, tiles=backends.get(selection.backend).tiles(cfg, _padded(head_dim), q.device))
    call = Call(layout=layout, is_causal=is_causal, sm_scale=float(sm_scale), return_lse=bool(return_lse),
                cfg=cfg, variant=selection.variant, head_dim=_padded(head_dim))
    if selection.backend != "sdpa":
        reason = backends.get(selection.backend).unsupported(q, k, v, call)
        if reason is not None:
            if backend != "auto":
                raise ValueError(f"backend={backend!r} cannot run this call: {reason}")
            selection = Selection("sdpa", "default", reason)
            call = dataclasses.replace(call, variant="default")
    if selection.reason is not None and backend == "auto" and selection.backend == "sdpa":
        log.once(f"auto->sdpa: {selection.reason}", f"comfy_sage: using SDPA: {selection.reason}", level=logging.INFO)
    if orig_dtype == torch.float32:
        log.once("fp32 input", "comfy_sage: float32 inputs are computed in bfloat16 and returned as float32")
    return call, selection, orig_dtype, head_dim


def _quant_config(variant, qk_quant, qk_granularity, pv_mode, smooth_k, smooth_q, tiles) -> QuantConfig:
    base_qk, base_pv = parse_variant(variant or DEFAULT_VARIANT)
    if tiles is not None and not isinstance(tiles, Tiles):
        raise TypeError(f"tiles: expected comfy_sage.config.Tiles, got {type(tiles).__name__}")
    for name, value in (("smooth_k", smooth_k), ("smooth_q", smooth_q)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected bool, got {type(value).__name__}")
    return QuantConfig(
        qk_quant=QKQuant.parse(qk_quant, "qk_quant") if qk_quant is not None else base_qk,
        granularity=QKGranularity.parse(qk_granularity, "qk_granularity")
        if qk_granularity is not None else QKGranularity.PER_THREAD,
        pv_mode=PVMode.parse(pv_mode, "pv_mode") if pv_mode is not None else base_pv,
        smooth_k=smooth_k,
        smooth_q=smooth_q,
        tiles=tiles or MMA_TILES,
    )


def _select_backend(backend, variant, cfg, q, k, layout, head_dim, attn_mask, is_causal) -> Selection:
    if backend == "sdpa":
        from .backends.sdpa import KERNELS
        if variant is not None and variant not in KERNELS:
            raise ValueError(f"variant: for backend='sdpa' expected one of {'|'.join(KERNELS)}, got {variant!r}")
        return Selection("sdpa", variant or "default", None)
    if backend in QUANTIZED_BACKENDS:
        if attn_mask is not None:
            raise ValueError(
                f"attn_mask: backend={backend!r} does not take masks (quantized kernels have no mask "
                "input); use backend='auto' or 'sdpa'"
            )
        reason = backends.why_not(backend)
        if reason is not None:
            raise ValueError(f"backend={backend!r} is not available here: {reason}")
        return Selection(backend, cfg.variant, None)
    # auto
    if attn_mask is not None:
        return Selection("sdpa", "default", "a mask was given and the quantized kernels take none")
    n_q = q.shape[2] if layout is TensorLayout.HND else q.shape[1]
    n_kv = k.shape[2] if layout is TensorLayout.HND else k.shape[1]
    rule = dispatch.choose(q, _padded(head_dim), n_q, n_kv, is_causal)
    if rule is None or backends.why_not(rule.backend) is not None:
        return Selection("sdpa", "default", "no measured win over SDPA for this GPU and shape")
    if rule.variant != cfg.variant:
        return Selection("sdpa", "default", f"no measured win over SDPA for variant {cfg.variant} on this GPU "
                                            f"and shape (measured: {rule.variant})")
    return Selection(rule.backend, rule.variant, None)


def _validate_tensors(q, k, v, layout: TensorLayout):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            axes = "(B, H, N, D)" if layout is TensorLayout.HND else "(B, N, H, D)"
            raise ValueError(f"{name}: expected a 4-D tensor {axes} for tensor_layout='{layout}', "
                             f"got shape {tuple(x.shape)}")
        if x.dtype not in _DTYPES:
            raise ValueError(f"{name}: expected dtype float16|bfloat16|float32, got {x.dtype}")
        if x.numel() == 0:
            raise ValueError(f"{name}: empty tensor of shape {tuple(x.shape)}")
        if x.stride(-1) != 1:
            raise ValueError(f"{name}: the last (head) dimension must be contiguous, got strides "
                             f"{tuple(x.stride())}; pass {name}.contiguous()")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    h_axis, n_axis = (1, 2) if layout is TensorLayout.HND else (2, 1)
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q, k: batch sizes differ: {q.shape[0]} and {k.shape[0]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q, k, v: head dims differ: q {q.shape[3]}, k/v {k.shape[3]}")
    head_dim = q.shape[3]
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"q: head dim {head_dim} is not supported; supported: 1..{MAX_HEAD_DIM} "
                         f"(64 and 128 native, others zero-padded to 64/128/256)")
    hq, hk = q.shape[h_axis], k.shape[h_axis]
    if hq % hk:
        raise ValueError(f"k: {hk} kv heads must divide the {hq} query heads (GQA/MQA); "
                         f"check tensor_layout='{layout}'")
    return head_dim, q.dtype


def _validate_mask(attn_mask, q, k, layout):
    if attn_mask is None:
        return
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise ValueError(f"attn_mask: expected a bool or floating (additive) mask, got {attn_mask.dtype}")
    if attn_mask.ndim < 2 or attn_mask.ndim > 4:
        raise ValueError(f"attn_mask: expected 2 to 4 dimensions (..., Lq, Lk), got shape {tuple(attn_mask.shape)}")
    n_q = q.shape[2] if layout is TensorLayout.HND else q.shape[1]
    n_kv = k.shape[2] if layout is TensorLayout.HND else k.shape[1]
    if attn_mask.shape[-1] not in (1, n_kv) or attn_mask.shape[-2] not in (1, n_q):
        raise ValueError(f"attn_mask: last two dims must broadcast to (Lq={n_q}, Lk={n_kv}), "
                         f"got shape {tuple(attn_mask.shape)}")


def _padded(head_dim: int) -> int:
    return next(d for d in PADDED_HEAD_DIMS if d >= head_dim)


def _pad_head_dim(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    target = _padded(d)
    return x if target == d else F.pad(x, (0, target - d))
