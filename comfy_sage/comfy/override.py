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

from .. import api, log
from .options import NodeBackend, PatchConfig
from .stats import OURS, Stats

OVERRIDE_KEY = "optimized_attention_override"
_HALF = (torch.float16, torch.bfloat16)
_EMPTY: dict = {}
_INT32_LIMIT = 2**31

# Fallback reasons: stable keys of the statistics and of the once-per-reason log, written to
# follow "comfy_sage: ComfyUI's attention for calls ..." and never holding a shape.
HOST_SAGE = "while ComfyUI runs with --use-sage-attention (not patching twice)"
LOW_PRECISION_OFF = "with low_precision_attention=False"
OUTSIDE_WINDOW = "outside the schedule window"
FULL_PRECISION_BLOCK = "in full-precision blocks"
MASK = "with masks"
EXACT_KV = "of image cross-attention (kept exact)"
FP32 = "with float32 activations"
BAD_DTYPE = "with an unsupported dtype"
BAD_SHAPE = "with an unsupported shape"
BAD_OPTIONS = "with transformer_options that are not a dict"
BAD_SIGMAS = "with sigmas that are not numbers (the schedule window cannot be applied)"
NEED_GRAD = "that need gradients (training: the quantized kernels have no backward)"
INT32_OFFSETS = "whose tensor offsets reach 2^31"
NON_FINITE = "with NaN/Inf inputs (nan_guard)"
BAD_HEAD_DIM = f"with head dims over {api.MAX_HEAD_DIM}"
REJECTED = "that comfy_sage rejects"  # + " (<argument>)": the API's own input check


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
        self._run = _compile_boundary(config.allow_compile)
        self._api_backend = "auto" if config.backend is NodeBackend.AUTO else config.backend.value
        self._explicit = config.backend is not NodeBackend.AUTO
        self._auto = not self._explicit
        self._variant = config.variant  # None: auto takes each rule's measured variant
        self._warned = {}  # reason -> the run (prompt) it was last warned in
        self._logged = set()  # reasons this override has handed to log.once already

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
        topts = kwargs.get("transformer_options")
        compiling = torch.compiler.is_compiling()
        if not compiling and type(topts) is dict:
            self.stats.begin_call(topts.get("sample_sigmas"))
        reason, p = self._decide(q, k, v, heads, mask, skip_reshape, kwargs, topts)
        if reason is not None:
            if not compiling:
                self.stats.add(_shape_key(q, k, heads, skip_reshape), reason)
                self._log_fallback(reason, p)
            return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                        skip_output_reshape=skip_output_reshape, **kwargs)

        start = self._tick(q) if self.config.timing and not compiling else None
        out = self._run(p)
        seconds = self._tock(q, start) if start is not None else None
        if not compiling:
            self.stats.add(_shape_key(q, k, heads, skip_reshape), OURS, backend=p.backend, seconds=seconds)
        return _to_host_layout(out, p.call.layout, skip_output_reshape)

    def _decide(self, q, k, v, heads, mask, skip_reshape, kwargs, topts):
        """(reason, plan or None) to keep the host's attention, or (None, the plan to run)."""
        cfg = self.config
        if cfg.host_uses_sage:
            return HOST_SAGE, None
        if kwargs.get("low_precision_attention", True) is False:
            return LOW_PRECISION_OFF, None
        if topts is None:
            topts = _EMPTY
        elif type(topts) is not dict:
            return BAD_OPTIONS, None
        if cfg.windowed:
            inside = self._inside_window(topts.get("sigmas"))
            if inside is None:
                return BAD_SIGMAS, None
            if not inside:
                return OUTSIDE_WINDOW, None
        if (cfg.full_precision_first or cfg.full_precision_last) and self._full_precision_block(topts):
            return FULL_PRECISION_BLOCK, None
        if mask is not None:
            return MASK, None
        if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
            return BAD_SHAPE, None
        dtype = q.dtype
        if dtype == torch.float32:
            return FP32, None
        if dtype not in _HALF or k.dtype != dtype or v.dtype != dtype:
            return BAD_DTYPE, None
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return NEED_GRAD, None

        qs, ks = q.shape, k.shape
        if skip_reshape:
            if len(qs) != 4 or len(ks) != 4 or v.ndim != 4:
                return BAD_SHAPE, None
            n_q, n_kv, d = qs[2], ks[2], qs[3]
        else:
            if len(qs) != 3 or len(ks) != 3 or v.ndim != 3:
                return BAD_SHAPE, None
            if type(heads) is not int or heads <= 0 or qs[2] % heads:
                return BAD_SHAPE, None
            d = qs[2] // heads
            n_q, n_kv = qs[1], ks[1]
        if d > api.MAX_HEAD_DIM:
            return BAD_HEAD_DIM, None
        if cfg.exact_kv_lengths and n_kv != n_q and n_kv in cfg.exact_kv_lengths:
            return EXACT_KV, None
        if self._auto:  # the decision first: a call auto would not quantize needs no reshaping or validation
            _, reason = api.auto_choice(q, api.padded_head_dim(d), n_q, n_kv, False, self._variant)
            if reason is not None:
                return reason, None

        if skip_reshape:
            qn, kn, vn, layout = q, k, v, "HND"
        else:
            if k.shape[-1] % d or v.shape[-1] != k.shape[-1]:
                return BAD_SHAPE, None
            try:
                qn = q.view(q.shape[0], q.shape[1], heads, d)
                kn = k.view(k.shape[0], k.shape[1], k.shape[-1] // d, d)
                vn = v.view(v.shape[0], v.shape[1], v.shape[-1] // d, d)
            except RuntimeError:  # a stride pattern view() cannot express; the host reshapes
                return BAD_SHAPE, None
            layout = "NHD"
        try:
            p = api.plan(qn, kn, vn, layout, sm_scale=kwargs.get("scale"), backend=self._api_backend,
                         variant=cfg.variant, qk_granularity=cfg.qk_granularity, smooth_k=cfg.smooth_k,
                         smooth_q=cfg.smooth_q)
        except (ValueError, TypeError) as e:  # the API's own input check; no kernel has run
            return f"{REJECTED} ({_argument(e)})", e
        if not p.quantized:
            return p.reason, p
        # Checks that only matter for our kernels come after the decision (a fallback skips them).
        if _max_offset(qn) >= _INT32_LIMIT or _max_offset(kn) >= _INT32_LIMIT or _max_offset(vn) >= _INT32_LIMIT:
            return INT32_OFFSETS, None
        if cfg.nan_guard and not bool(torch.isfinite(qn).all() & torch.isfinite(kn).all() & torch.isfinite(vn).all()):
            return NON_FINITE, None
        return None, p

    def _log_fallback(self, reason: str, detail) -> None:
        """Once per reason (INFO); an explicitly chosen backend that cannot run warns once per prompt."""
        if self._explicit and isinstance(detail, api.Plan) and detail.error is not None:
            run = self.stats.runs
            if self._warned.get(reason) != run:
                self._warned[reason] = run
                log.logger.warning("comfy_sage: ComfyUI's attention for calls %s (backend=%s was chosen in the "
                                   "node)", reason, self.config.backend.value)
            return
        if reason in self._logged:  # the per-call path: nothing to format or lock
            return
        self._logged.add(reason)
        text = f"comfy_sage: ComfyUI's attention for calls {reason}"
        if isinstance(detail, Exception):
            text += f": {detail}"
        if reason == NON_FINITE:
            log.once("comfy.nan_guard", "comfy_sage: non-finite values reached attention; those calls use "
                     "ComfyUI's attention (NaN/Inf guard)", level=logging.WARNING)
        level = logging.WARNING if reason == NEED_GRAD else logging.INFO
        log.once(f"comfy.fallback: {reason}", text, level=level)

    def _inside_window(self, sigmas) -> Optional[bool]:
        """Whether the current sigma is inside the window (True without a sigma), or None when
        the host's sigmas cannot be read as numbers."""
        if sigmas is None:
            return True
        if sigmas is not self._sigma_obj:  # one host sync per step, not per call
            try:
                sigma = float(sigmas.max()) if isinstance(sigmas, torch.Tensor) else float(max(sigmas))
            except (TypeError, ValueError, RuntimeError):  # empty, non-numeric or not a sequence
                return None
            if sigma != sigma:
                return None
            cfg = self.config
            # the host's sigmas are float32 tensors, the bounds Python floats: compare with float32 slack
            slack = 1e-6 * max(abs(sigma), 1.0)
            self._sigma_inside = cfg.sigma_end - slack <= sigma <= cfg.sigma_start + slack
            self._sigma_obj = sigmas
        return self._sigma_inside

    def _full_precision_block(self, topts) -> bool:
        cfg = self.config
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
def _compile_boundary(allow_compile: bool):
    if allow_compile:
        return api.run  # traced through: the kernels are torch.library custom ops
    return torch.compiler.disable(api.run, recursive=True)


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
        return (b, h, n_q, n_kv, d, _dtype_name(q.dtype))  # torch.Size holds ints already
    except (AttributeError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return (0, 0, 0, 0, 0, "unknown")


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def _max_offset(t: torch.Tensor) -> int:
    """The largest element offset the tensor addresses (what a 32-bit index must hold)."""
    if t.is_contiguous():
        return t.numel() - 1
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def _argument(e: Exception) -> str:
    """The argument an API error names (its text up to the first colon): a stable key."""
    head = str(e).split(":", 1)[0]
    return head if len(head) <= 40 else type(e).__name__


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
