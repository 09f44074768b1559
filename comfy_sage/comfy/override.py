"""The attention override ComfyUI calls: decide per call whether our quantized attention runs.

ComfyUI (``comfy/ldm/modules/attention.py`` ``wrap_attn``) calls the function stored in
``transformer_options["optimized_attention_override"]`` as::

    fn(func, q, k, v, heads, mask=None, attn_precision=None,
       skip_reshape=False, skip_output_reshape=False, **kwargs)

where ``func`` is the attention the host would have run. ``kwargs`` carries
``transformer_options`` and, depending on the model and host version, ``scale``,
``enable_gqa``, ``low_precision_attention`` and the host's private
``_inside_attn_wrapper`` flag (passed back to ``func`` untouched, so the host does not
re-enter the override). Layout: ``(B, L, H*D)`` unless ``skip_reshape`` (then
``(B, H, L, D)``); output ``(B, Lq, H*D)`` unless ``skip_output_reshape`` (then ``(B, H, Lq, D)``).

Every reason to keep the host's attention is checked *before* anything runs (STYLE 11), is
counted in :class:`~comfy_sage.comfy.stats.Stats`, and logged once per reason.

Decisions worth knowing:

* float32 activations keep the host attention. A model runs in float32 on purpose (``--force-fp32``,
  an fp32-only model, CPU hosts without bf16); quantizing there would change the precision
  the user chose, and the quantized kernels take fp16/bf16 only, so a cast would add memory
  traffic on top. Run the model in fp16/bf16 (the default on GPUs) to use the node.
* ``attn_precision=torch.float32`` (the host's "upcast attention" for SD2.x) does not force
  a fallback: our Q·Kᵀ is integer with float32 scales and the softmax is float32, which is
  what the upcast protects (fp16 Q·Kᵀ overflow).
* GQA (``enable_gqa`` or fewer K/V heads) is passed through: ``comfy_sage.sageattn`` takes
  Hq a multiple of Hk.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Optional

import torch

from .. import log
from .options import SIGMA_MAX, SIGMA_MIN, NodeBackend, PatchConfig
from .stats import OURS, Stats

OVERRIDE_KEY = "optimized_attention_override"
_HALF = (torch.float16, torch.bfloat16)
_INT32_LIMIT = 2**31

# Fallback reasons (stable keys: the statistics and the once-per-reason log use them).
HOST_SAGE = "ComfyUI started with --use-sage-attention (not patching twice)"
LOW_PRECISION_OFF = "low_precision_attention=False"
OUTSIDE_WINDOW = "outside the schedule window"
FULL_PRECISION_BLOCK = "full-precision block"
MASK = "attention mask"
EXACT_KV = "image cross-attention kept exact"
FP32 = "float32 activations"
BAD_DTYPE = "unsupported dtype"
BAD_SHAPE = "unsupported shape"
INT32_OFFSETS = "tensor offsets reach 2^31"
NON_FINITE = "non-finite q/k/v (NaN/Inf guard)"
REJECTED = "not runnable by comfy_sage"  # + the API's own reason (head dim, backend unavailable, ...)


class SageAttentionOverride:
    """Callable installed as the host's attention override; chains an earlier override.

    With a ``previous`` override (set by another node before ours), the previous one keeps
    running first and receives, as its ``func``, our attention with the host's function as
    fallback: both patches apply.
    """

    def __init__(self, config: PatchConfig, previous: Optional[Callable] = None):
        self.config = config
        self.previous = previous
        self.stats = Stats()
        self._sigma_obj = None  # the host's current sigma tensor, and whether it is inside the window
        self._sigma_inside = True
        self._sageattn = _compile_boundary(config.allow_compile)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options. The override behaves like the plain
        # function the host expects there (functions deep-copy to themselves): its settings are
        # frozen, and clones of a patched model share one set of statistics.
        return self

    def __copy__(self):
        return self

    def __repr__(self) -> str:
        return f"SageAttentionOverride({self.config.backend.value}, previous={self.previous!r})"

    def __call__(self, func, *args, **kwargs):
        if self.previous is not None:
            return self.previous(functools.partial(self.attend, func), *args, **kwargs)
        return self.attend(func, *args, **kwargs)

    # -- one attention call -------------------------------------------------------------
    def attend(self, func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
               skip_output_reshape=False, **kwargs):
        def host():
            return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                        skip_output_reshape=skip_output_reshape, **kwargs)

        topts = kwargs.get("transformer_options") or {}
        compiling = torch.compiler.is_compiling()
        if not compiling:
            self.stats.begin_call(topts.get("sample_sigmas"))
        shape = _shape_key(q, k, heads, skip_reshape)
        reason, call = self._plan(q, k, v, heads, mask, skip_reshape, kwargs, topts)
        if reason is not None:
            if not compiling:
                self.stats.add(shape, reason)
                log.once(f"comfy.fallback: {reason}", f"comfy_sage: host attention for calls with {reason}",
                         level=logging.INFO)
            return host()

        qn, kn, vn, layout, sageattn_kwargs, backend = call
        start = self._tick(q) if self.config.timing and not compiling else None
        out = self._sageattn(qn, kn, vn, layout, **sageattn_kwargs)
        seconds = self._tock(q, start) if start is not None else None
        if not compiling:
            self.stats.add(shape, OURS, backend=backend, seconds=seconds)
        return _to_host_layout(out, layout, skip_output_reshape)

    def _plan(self, q, k, v, heads, mask, skip_reshape, kwargs, topts):
        """(reason, None) to keep the host's attention, or (None, the call to make)."""
        cfg = self.config
        if cfg.host_uses_sage:
            return HOST_SAGE, None
        if kwargs.get("low_precision_attention", True) is False:
            return LOW_PRECISION_OFF, None
        if not self._inside_window(topts.get("sigmas")):
            return OUTSIDE_WINDOW, None
        if self._full_precision_block(topts):
            return FULL_PRECISION_BLOCK, None
        if mask is not None:
            return MASK, None
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return BAD_SHAPE, None
        if q.dtype == torch.float32:
            return FP32, None
        if q.dtype not in _HALF or k.dtype != q.dtype or v.dtype != q.dtype:
            return BAD_DTYPE, None

        expected_ndim = 4 if skip_reshape else 3
        if any(t.ndim != expected_ndim for t in (q, k, v)):
            return BAD_SHAPE, None
        if skip_reshape:
            qn, kn, vn, layout = q, k, v, "HND"
        else:
            if not isinstance(heads, int) or heads <= 0 or q.shape[-1] % heads:
                return BAD_SHAPE, None
            d = q.shape[-1] // heads
            if k.shape[-1] % d or v.shape[-1] != k.shape[-1]:
                return BAD_SHAPE, None
            try:
                qn = q.view(q.shape[0], q.shape[1], heads, d)
                kn = k.view(k.shape[0], k.shape[1], k.shape[-1] // d, d)
                vn = v.view(v.shape[0], v.shape[1], v.shape[-1] // d, d)
            except RuntimeError:  # a stride pattern view() cannot express; the host reshapes
                return BAD_SHAPE, None
            layout = "NHD"
        if cfg.exact_kv_lengths:
            n_q, n_kv = (qn.shape[2], kn.shape[2]) if layout == "HND" else (qn.shape[1], kn.shape[1])
            if n_kv != n_q and n_kv in cfg.exact_kv_lengths:
                return EXACT_KV, None
        if any(_max_offset(t) >= _INT32_LIMIT for t in (qn, kn, vn)):
            return INT32_OFFSETS, None
        if cfg.nan_guard and not bool(torch.isfinite(qn).all() & torch.isfinite(kn).all() & torch.isfinite(vn).all()):
            log.once("comfy.nan_guard", "comfy_sage: non-finite values reached attention; those calls use the "
                     "host attention (NaN/Inf guard)", level=logging.WARNING)
            return NON_FINITE, None

        backend = _api_backend(cfg.backend, qn)
        sageattn_kwargs = dict(
            backend=backend,
            variant=cfg.variant,
            qk_granularity=None if cfg.qk_granularity is None else cfg.qk_granularity.value,
            smooth_k=cfg.smooth_k,
            smooth_q=cfg.smooth_q,
        )
        scale = kwargs.get("scale")
        if scale is not None:
            sageattn_kwargs["sm_scale"] = float(scale)
        from .. import api

        try:
            selection = api.select(qn, kn, vn, layout, **sageattn_kwargs)
        except (ValueError, TypeError) as e:  # the API's own input check; no kernel has run
            return f"{REJECTED}: {_first_clause(e)}", None
        if selection.backend not in api.QUANTIZED_BACKENDS:
            return f"backend chose {selection.backend}: {selection.reason}", None
        return None, (qn, kn, vn, layout, sageattn_kwargs, selection.backend)

    def _inside_window(self, sigmas) -> bool:
        cfg = self.config
        if sigmas is None or (cfg.sigma_start == SIGMA_MAX and cfg.sigma_end == SIGMA_MIN):
            return True
        if sigmas is not self._sigma_obj:  # one host sync per step, not per call
            sigma = float(sigmas.max()) if isinstance(sigmas, torch.Tensor) else float(max(sigmas))
            # the host's sigmas are float32 tensors, the bounds Python floats: compare with float32 slack
            slack = 1e-6 * max(abs(sigma), 1.0)
            self._sigma_inside = cfg.sigma_end - slack <= sigma <= cfg.sigma_start + slack
            self._sigma_obj = sigmas
        return self._sigma_inside

    def _full_precision_block(self, topts) -> bool:
        cfg = self.config
        if not (cfg.full_precision_first or cfg.full_precision_last):
            return False
        index, total = topts.get("block_index"), topts.get("total_blocks")
        if not isinstance(index, int) or not isinstance(total, int):
            return False  # UNets and models that do not report blocks: the rule does not apply
        block_type = topts.get("block_type")
        last_type = cfg.last_stage_type
        in_first_stage = last_type is None or block_type != last_type
        in_last_stage = last_type is None or block_type == last_type
        return (in_first_stage and index < cfg.full_precision_first) or (
            in_last_stage and index >= total - cfg.full_precision_last
        )

    @staticmethod
    def _tick(q):
        if q.is_cuda:
            torch.cuda.synchronize(q.device)
        return time.perf_counter()

    @staticmethod
    def _tock(q, start):
        if q.is_cuda:
            torch.cuda.synchronize(q.device)
        return time.perf_counter() - start


def chain(previous: Optional[Callable], config: PatchConfig) -> SageAttentionOverride:
    """Our override over ``previous`` (the override already installed, or None).

    An earlier :class:`SageAttentionOverride` (the node applied twice) is replaced, not
    stacked: the later node's settings win, and whatever that one chained stays chained.
    """
    if isinstance(previous, SageAttentionOverride):
        previous = previous.previous
    return SageAttentionOverride(config, previous=previous)


def install(transformer_options: dict, config: PatchConfig) -> SageAttentionOverride:
    """Install our override into a (cloned) model's transformer_options, chaining any other."""
    override = chain(transformer_options.get(OVERRIDE_KEY), config)
    transformer_options[OVERRIDE_KEY] = override
    return override


def find(transformer_options: dict) -> Optional[SageAttentionOverride]:
    """Our override in these options, if one is installed (for the compare/benchmark nodes)."""
    fn = (transformer_options or {}).get(OVERRIDE_KEY)
    return fn if isinstance(fn, SageAttentionOverride) else None


# -- helpers ---------------------------------------------------------------------------------
def _api_backend(backend: NodeBackend, q: torch.Tensor) -> str:
    if backend is NodeBackend.AUTO:
        return "auto" if q.is_cuda else "reference"
    return backend.value


def _compile_boundary(allow_compile: bool):
    from .. import sageattn

    if allow_compile:
        return sageattn  # traced through: the kernels are torch.library custom ops
    return torch.compiler.disable(sageattn, recursive=True)


def _shape_key(q, k, heads, skip_reshape) -> tuple:
    try:
        if skip_reshape:
            b, h, n_q, d = q.shape
            n_kv = k.shape[2]
        else:
            b, n_q, hd = q.shape
            h = heads
            d = hd // heads
            n_kv = k.shape[1]
        return (int(b), int(h), int(n_q), int(n_kv), int(d), str(q.dtype).replace("torch.", ""))
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return (0, 0, 0, 0, 0, "unknown")


def _max_offset(t: torch.Tensor) -> int:
    """The largest element offset the tensor addresses (what a 32-bit index must hold)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def _first_clause(e: Exception) -> str:
    text = str(e)
    return text.split(";")[0][:120]


def _to_host_layout(out: torch.Tensor, layout: str, skip_output_reshape: bool) -> torch.Tensor:
    if layout == "HND":  # out (B, H, Lq, D)
        if skip_output_reshape:
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)
    # NHD: out (B, Lq, H, D)
    if skip_output_reshape:
        return out.transpose(1, 2)
    b, n, h, d = out.shape
    return out.reshape(b, n, h * d)


__all__ = ["SageAttentionOverride", "chain", "install", "find", "OVERRIDE_KEY"]
