"""``plan`` and ``run``: validation, layout and head-dim normalisation, backend choice, once per call.

``plan(q, k, v, ...)`` checks the arguments, normalises them and decides what runs, returning a
frozen :class:`Plan`; ``run(plan)`` launches it. ``sageattn`` is ``run(plan(...))``, call-compatible
with the ``sageattention`` package's ``sageattn(q, k, v, tensor_layout, is_causal, sm_scale,
return_lse)`` plus keyword-only options for the backend and the quantization. The ComfyUI
override plans each call once and either runs the plan or calls the host's own function.

Every input error is a ValueError or TypeError naming the argument, its value and what is
supported. A plan that falls back says why in ``Plan.reason``, a phrase without shapes (it keys
the once-per-reason log and the statistics), written to follow "calls ...".
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F

from . import backends, dispatch, log
from .call import Call
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
_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32))
_LAYOUTS = {"HND": TensorLayout.HND, "NHD": TensorLayout.NHD}  # TensorLayout members hash as their strings
SDPA_KERNELS = ("default", "flash", "efficient", "cudnn", "math")
SDPA_CUDA_ONLY = ("flash", "efficient", "cudnn")

# Why auto keeps SDPA (stable phrases; they follow "calls ...").
WITH_MASK = "with an attention mask (the quantized kernels take none)"
NEED_GRAD = "that need gradients (the quantized kernels have no backward)"


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """One attention call, decided: what runs, with which parameters, or why not.

    requested: the ``backend`` argument. backend/variant: what ``run`` launches ("sdpa" when auto
    falls back). reason: None when the requested choice runs as asked; else why not, a stable
    phrase ("with an attention mask ..."). error: set when the requested backend cannot run this
    call at all (an explicit backend that is unavailable or does not support it): ``run`` raises
    ValueError with it. head_dim: the caller's; ``call.head_dim`` is the padded one the backend sees.
    """

    requested: str
    backend: str
    variant: str
    reason: Optional[str]
    call: Call
    head_dim: int
    dtype: torch.dtype  # the caller's (and the output's) dtype
    error: Optional[str] = None
    q: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False)
    k: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False)
    v: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False)

    @property
    def padded_head_dim(self) -> int:
        return self.call.head_dim

    @property
    def work_dtype(self) -> torch.dtype:
        """The dtype the backend computes in: the quantized kernels take float16/bfloat16 only."""
        if self.dtype == torch.float32 and self.backend in QUANTIZED_BACKENDS:
            return torch.bfloat16
        return self.dtype

    @property
    def quantized(self) -> bool:
        """True when ``run`` launches one of our quantized kernels."""
        return self.error is None and self.backend in QUANTIZED_BACKENDS


def plan(
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
) -> Plan:
    """Validate, normalise and choose once; launches nothing. Arguments as :func:`sageattn`.

    Raises ValueError/TypeError for invalid arguments. An explicit backend that cannot run the
    call gives a plan with ``error`` set (``run`` raises it) so that a caller like the ComfyUI
    override can fall back without catching exceptions.
    """
    if kwargs:
        qk_granularity = _pop_alias(kwargs, qk_granularity)
    layout = _LAYOUTS.get(tensor_layout) if isinstance(tensor_layout, str) else None
    if layout is None:
        raise ValueError(f"tensor_layout: expected one of HND|NHD, got {tensor_layout!r}")
    if not isinstance(backend, str) or backend not in BACKEND_CHOICES:
        raise ValueError(f"backend: expected one of {'|'.join(BACKEND_CHOICES)}, got {backend!r}")
    if type(is_causal) is not bool:
        raise TypeError(f"is_causal: expected bool, got {type(is_causal).__name__}")
    if type(return_lse) is not bool:
        raise TypeError(f"return_lse: expected bool, got {type(return_lse).__name__}")
    if variant is not None and not isinstance(variant, str):
        raise TypeError(f"variant: expected a str or None, got {type(variant).__name__}")
    head_dim = _validate_tensors(q, k, v, layout)
    if attn_mask is not None:
        _validate_mask(attn_mask, q, k, layout)
        if is_causal:
            raise ValueError("attn_mask: given together with is_causal=True; pass one of them (fold the causal "
                             "mask into attn_mask), as torch SDPA requires")
    scale = _scale(sm_scale, head_dim)

    if backend == "sdpa":
        kernel = _sdpa_kernel(variant, q.device)
        call = Call(layout, is_causal, scale, return_lse, _DEFAULT_CFG, kernel, head_dim, attn_mask)
        return Plan(backend, "sdpa", kernel, None, call, head_dim, q.dtype, None, q, k, v)

    _check_option_types(qk_quant, qk_granularity, pv_mode, smooth_k, smooth_q, tiles)
    cfg = _quant_config(variant, qk_quant, qk_granularity, pv_mode, smooth_k, smooth_q, tiles)
    padded = _padded(head_dim)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if backend == "auto":
        if attn_mask is not None:
            return _fallback(WITH_MASK, layout, is_causal, scale, return_lse, head_dim, attn_mask, q, k, v)
        if needs_grad:
            return _fallback(NEED_GRAD, layout, is_causal, scale, return_lse, head_dim, None, q, k, v)
        n_axis = 2 if layout is TensorLayout.HND else 1
        # No variant asked for: each call gets the variant measured fastest for its shape class.
        wanted = None if variant is None and qk_quant is None and pv_mode is None else cfg.variant
        rule, reason = auto_choice(q, padded, q.shape[n_axis], k.shape[n_axis], is_causal, wanted)
        if reason is not None:
            return _fallback(reason, layout, is_causal, scale, return_lse, head_dim, None, q, k, v)
        name = rule.backend
        if wanted is None and rule.variant != cfg.variant:
            cfg = _quant_config(rule.variant, None, qk_granularity, None, smooth_k, smooth_q, tiles)
    else:
        name = backend
        if attn_mask is not None:
            raise ValueError(f"attn_mask: backend={backend!r} does not take masks (the quantized kernels have "
                             "no mask input); use backend='auto' or 'sdpa'")
        if needs_grad:
            raise ValueError(f"backend={backend!r}: q, k or v requires grad, but the quantized kernels have no "
                             "backward (their gradients would be wrong or missing); use backend='sdpa' or 'auto', "
                             "or call under torch.no_grad()")
        if q.device.type == "meta":
            raise ValueError(f"q: device meta holds no data; backend={backend!r} runs on cpu|cuda tensors")
        why = backends.why_not(name)
        if why is not None:
            call = Call(layout, is_causal, scale, return_lse, cfg, cfg.variant, padded)
            return Plan(backend, name, cfg.variant, f"while the {name} backend is unavailable ({why})", call,
                        head_dim, q.dtype, f"backend={backend!r} is not available here: {why}", q, k, v)

    if tiles is None:
        cfg = _backend_tiles(name, cfg, padded, q.device)
    call = Call(layout, is_causal, scale, return_lse, cfg, cfg.variant, padded)
    why = backends.get(name).unsupported(q, k, v, call)
    if why is not None:
        reason = f"that the {name} backend cannot run ({why})"
        if backend == "auto":
            return _fallback(reason, layout, is_causal, scale, return_lse, head_dim, None, q, k, v)
        return Plan(backend, name, cfg.variant, reason, call, head_dim, q.dtype,
                    f"backend={backend!r} cannot run this call: {why}", q, k, v)
    return Plan(backend, name, cfg.variant, None, call, head_dim, q.dtype, None, q, k, v)


def run(p: Plan):
    """Launch a plan: the output in q's layout and dtype (plus lse when ``return_lse``).

    The same steps for every backend; what differs is in the plan: a quantized backend's call has
    the padded head dim and works in float16/bfloat16, SDPA's takes the caller's tensors as they are.
    """
    if p.error is not None:
        raise ValueError(p.error)
    call = p.call
    q, k, v = p.q, p.k, p.v
    if p.work_dtype != p.dtype:
        log.once("fp32 input", "comfy_sage: float32 inputs to the quantized backends are computed in bfloat16 "
                 "and returned as float32")
        q, k, v = q.to(p.work_dtype), k.to(p.work_dtype), v.to(p.work_dtype)
    pad = call.head_dim - p.head_dim
    if pad:
        q, k, v = F.pad(q, (0, pad)), F.pad(k, (0, pad)), F.pad(v, (0, pad))
    result = backends.get(p.backend).run(q, k, v, call)
    out, lse = result if call.return_lse else (result, None)
    if pad:
        out = out[..., :p.head_dim]
    if out.dtype != p.dtype:
        out = out.to(p.dtype)
    return (out, lse) if call.return_lse else out


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
    """Attention with quantized Q·Kᵀ and P·V: ``run(plan(...))``.

    q: (B, Hq, Lq, D) for ``tensor_layout="HND"`` or (B, Lq, Hq, D) for ``"NHD"``; k, v: the
    same with Hk heads (Hq a multiple of Hk) and Lk tokens. float16, bfloat16 or float32 (the
    quantized backends compute float32 in bfloat16 and return float32). Head dims other than
    64/128 are zero-padded to 64, 128 or 256 for the quantized backends; ``sm_scale`` defaults to
    1/sqrt(D) of the unpadded D. Causal masking is top-left aligned, like torch SDPA. Returns the
    output in q's layout and dtype, plus the log-sum-exp (B, Hq, Lq) in float32 natural-log units
    when ``return_lse``.

    backend: ``auto`` (a quantized kernel where the measured table in ``dispatch`` says it wins,
    else torch SDPA), ``cuda``, ``triton``, ``reference`` (the pure-PyTorch spec), ``sdpa``.
    variant: a ``config.VARIANTS`` name such as ``int8qk-fp8pv`` (quantized backends) or an SDPA
    kernel (``default``, ``flash``, ``efficient``, ``cudnn``, ``math``). Left out under ``auto``: the
    variant the table measured fastest for the call's shape class; given, ``auto`` quantizes only
    where a rule shows that variant faster than SDPA. qk_quant / qk_granularity
    (alias qk_quant_gran) / pv_mode override the variant's parts; smooth_k / smooth_q switch the
    smoothing; tiles sets the reference's quantization groups. attn_mask (bool or additive) runs
    only on SDPA: ``auto`` falls back to it, a quantized backend raises. Inputs that require grad
    (with grad enabled) run on SDPA under ``auto``; a quantized backend raises (no backward).
    """
    p = plan(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, backend=backend, variant=variant,
             qk_quant=qk_quant, qk_granularity=qk_granularity, pv_mode=pv_mode, smooth_k=smooth_k,
             smooth_q=smooth_q, tiles=tiles, attn_mask=attn_mask, **kwargs)
    if p.reason is not None and p.error is None:
        log.once(f"auto->sdpa: {p.reason}", f"comfy_sage: torch SDPA for calls {p.reason}", level=logging.INFO)
    return run(p)


def auto_choice(q: torch.Tensor, padded_head_dim: int, tokens_q: int, tokens_kv: int, is_causal: bool,
                variant: Optional[str]):
    """(rule, None) when ``auto`` runs a quantized kernel for this call, else (None, why not).

    What the decision needs and nothing more: the device, the padded head dim, the token counts,
    the masking and the variant asked for (None: the first rule's, the variant measured fastest there;
    a name: the first rule of that variant). ``plan`` uses it after validating; the ComfyUI override asks it
    first, so that a call auto would not quantize goes back to the host without further work.
    """
    if not q.is_cuda:
        return None, dispatch.no_rule_reason(q.device)
    index = q.get_device()
    ours = (lambda rule: True) if variant is None else (lambda rule: rule.variant == variant)
    rule = dispatch.choose_cuda(index, padded_head_dim, tokens_q, tokens_kv, is_causal,
                                lambda r: ours(r) and _backend_usable(r))
    if rule is None:
        # The first rule covering the call, usable or not: when there is one, its backend is why.
        skipped = dispatch.choose_cuda(index, padded_head_dim, tokens_q, tokens_kv, is_causal, ours)
        if skipped is not None:
            return None, f"while the {skipped.backend} backend is unavailable ({backends.why_not(skipped.backend)})"
        other = dispatch.choose_cuda(index, padded_head_dim, tokens_q, tokens_kv, is_causal) if variant else None
        if other is not None:
            return None, f"where variant {variant} was not measured faster than SDPA (measured: {other.variant})"
        return None, dispatch.NO_RULE_CUDA
    return rule, None


def _backend_usable(rule) -> bool:
    return backends.why_not(rule.backend) is None


def padded_head_dim(head_dim: int) -> int:
    """The head dim the quantized backends see (64, 128 or 256)."""
    return _padded(head_dim)


# -- pieces of plan ---------------------------------------------------------------------------------
def _fallback(reason, layout, is_causal, scale, return_lse, head_dim, attn_mask, q, k, v) -> Plan:
    call = Call(layout, is_causal, scale, return_lse, _DEFAULT_CFG, "default", head_dim, attn_mask)
    return Plan("auto", "sdpa", "default", reason, call, head_dim, q.dtype, None, q, k, v)


def _pop_alias(kwargs: dict, qk_granularity):
    if "qk_quant_gran" in kwargs:  # the sageattention package's name for the granularity
        alias = kwargs.pop("qk_quant_gran")
        if qk_granularity is not None and alias != qk_granularity:
            raise ValueError(f"qk_granularity={qk_granularity!r} and its alias qk_quant_gran={alias!r} differ; "
                             "pass one of them")
        qk_granularity = alias
    if kwargs:
        raise TypeError(f"sageattn: unexpected keyword argument(s) {sorted(kwargs)}")
    return qk_granularity


def _scale(sm_scale, head_dim: int) -> float:
    if sm_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
        raise TypeError(f"sm_scale: expected a positive finite number or None, got {type(sm_scale).__name__}")
    if not (math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")
    return float(sm_scale)


def _sdpa_kernel(variant, device: torch.device) -> str:
    if variant is None:
        return "default"
    if variant not in SDPA_KERNELS:
        raise ValueError(f"variant: for backend='sdpa' expected one of {'|'.join(SDPA_KERNELS)}, got {variant!r}")
    if variant in SDPA_CUDA_ONLY and device.type != "cuda":
        runs = "|".join(k for k in SDPA_KERNELS if k not in SDPA_CUDA_ONLY)
        raise ValueError(f"variant: SDPA kernel {variant!r} runs on CUDA tensors only; on {device.type}: {runs}")
    return variant


def _check_option_types(qk_quant, qk_granularity, pv_mode, smooth_k, smooth_q, tiles) -> None:
    """Types first, so that the cached parse below never sees an unhashable value."""
    for name, value in (("qk_quant", qk_quant), ("qk_granularity", qk_granularity), ("pv_mode", pv_mode)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name}: expected a str or None, got {type(value).__name__}")
    for name, value in (("smooth_k", smooth_k), ("smooth_q", smooth_q)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected bool, got {type(value).__name__}")
    if tiles is not None and not isinstance(tiles, Tiles):
        raise TypeError(f"tiles: expected comfy_sage.config.Tiles, got {type(tiles).__name__}")


@functools.lru_cache(maxsize=256)
def _quant_config(variant, qk_quant, qk_granularity, pv_mode, smooth_k, smooth_q, tiles) -> QuantConfig:
    """The arguments as a config (cached: the same few combinations come back on every call)."""
    base_qk, base_pv = parse_variant(DEFAULT_VARIANT if variant is None else variant)
    return QuantConfig(
        qk_quant=QKQuant.parse(qk_quant, "qk_quant") if qk_quant is not None else base_qk,
        granularity=QKGranularity.parse(qk_granularity, "qk_granularity")
        if qk_granularity is not None else QKGranularity.PER_THREAD,
        pv_mode=PVMode.parse(pv_mode, "pv_mode") if pv_mode is not None else base_pv,
        smooth_k=smooth_k,
        smooth_q=smooth_q,
        tiles=tiles or MMA_TILES,
    )


_tiles_cache: dict = {}


def _backend_tiles(name: str, cfg: QuantConfig, head_dim: int, device: torch.device) -> QuantConfig:
    """cfg with the backend's own tiles. A backend's tile facts depend on (config, head dim,
    device) only, so each combination is asked once per process (the cuda backend asks its
    library through ctypes)."""
    key = (name, cfg, head_dim, device)
    out = _tiles_cache.get(key)
    if out is None:
        tiles = backends.get(name).tiles(cfg, head_dim, device)
        out = cfg if tiles == cfg.tiles else dataclasses.replace(cfg, tiles=tiles)
        _tiles_cache[key] = out
    return out


def _validate_tensors(q, k, v, layout: TensorLayout) -> int:
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
        if x.stride(-1) != 1 and x.shape[-1] != 1:
            raise ValueError(f"{name}: the last (head) dimension must be contiguous, got strides "
                             f"{tuple(x.stride())}; pass {name}.contiguous()")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q, k: batch sizes differ: {q.shape[0]} and {k.shape[0]}")
    head_dim = q.shape[3]
    if head_dim != k.shape[3]:
        raise ValueError(f"q, k, v: head dims differ: q {head_dim}, k/v {k.shape[3]}")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"q: head dim {head_dim} is not supported; supported: 1..{MAX_HEAD_DIM} "
                         f"(64 and 128 native, others zero-padded to 64/128/256)")
    h_axis = 1 if layout is TensorLayout.HND else 2
    hq, hk = q.shape[h_axis], k.shape[h_axis]
    if hq % hk:
        raise ValueError(f"k: {hk} kv heads must divide the {hq} query heads (GQA/MQA); "
                         f"check tensor_layout='{layout}'")
    return head_dim


def _validate_mask(attn_mask, q, k, layout):
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise ValueError(f"attn_mask: expected a bool or floating (additive) mask, got {attn_mask.dtype}")
    if attn_mask.ndim < 2 or attn_mask.ndim > 4:
        raise ValueError(f"attn_mask: expected 2 to 4 dimensions (..., Lq, Lk), got shape {tuple(attn_mask.shape)}")
    if attn_mask.device != q.device:
        raise ValueError(f"attn_mask: expected device {q.device} (q's), got {attn_mask.device}")
    n_axis, h_axis = (2, 1) if layout is TensorLayout.HND else (1, 2)
    n_q, n_kv = q.shape[n_axis], k.shape[n_axis]
    if attn_mask.shape[-1] not in (1, n_kv) or attn_mask.shape[-2] not in (1, n_q):
        raise ValueError(f"attn_mask: last two dims must broadcast to (Lq={n_q}, Lk={n_kv}), "
                         f"got shape {tuple(attn_mask.shape)}")
    lead = (q.shape[0], q.shape[h_axis])[4 - attn_mask.ndim:]
    if any(m not in (1, n) for m, n in zip(attn_mask.shape[:-2], lead)):
        raise ValueError(f"attn_mask: leading dims must broadcast to (B={q.shape[0]}, Hq={q.shape[h_axis]}), "
                         f"got shape {tuple(attn_mask.shape)}")


def _padded(head_dim: int) -> int:
    for d in PADDED_HEAD_DIMS:
        if d >= head_dim:
            return d
    raise ValueError(f"head dim {head_dim} is over {MAX_HEAD_DIM}")


_DEFAULT_CFG = QuantConfig()
