"""The native CUDA backend: csrc/ compiled by ``comfy_sage.build``, loaded with ctypes.

One ``torch.library`` custom op, ``comfy_sage::cuda_attention``, wraps the C ABI's
``cs_attention`` (with a fake implementation, so torch.compile traces through it). Tile
sizes and scale counts come from the library (``cs_query_tiles``), never from literals here.
The kernel family is chosen by the library (csrc/abi.cu) from the device's compute capability;
``family=`` asks for one explicitly (tests run every family the device can run that way).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional, Union

import torch

from .. import native
from ..config import PVMode, QKGranularity, QKQuant, Tiles, VARIANTS, _StrEnum, variant_name
from .base import Call

# The C ABI this wrapper speaks (CS_ABI_VERSION, csrc/comfy_sage.h); a library of another version is not loaded.
ABI_VERSION = 2


class KernelFamily(_StrEnum):
    """Kernel families of the native library (csrc/configs.json). AUTO: the library's choice."""

    AUTO = "auto"
    W16 = "w16"    # mma.sync, 16-row warps: every arch
    W32 = "w32"    # mma.sync, 32-row warps: sm_90, FP16 and INT8 P·V
    SM90 = "sm90"  # wgmma/TMA: sm_90 (csrc/sm90/)


# Codes of the C ABI (csrc/comfy_sage.h, csrc/common/types.h: enum class PV, Gran, Family).
PV_CODES = {PVMode.FP16: 0, PVMode.FP8: 1, PVMode.FP8_ACC16: 2, PVMode.INT8: 3, PVMode.FP16_ACC16: 4}
GRAN_CODES = {QKGranularity.PER_THREAD: 0, QKGranularity.PER_WARP: 1, QKGranularity.PER_BLOCK: 2}
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
FAMILY_CODES = {KernelFamily.AUTO: 0, KernelFamily.W16: 1, KernelFamily.W32: 2, KernelFamily.SM90: 3}
HEAD_DIMS = (64, 128)
_I64x3 = ctypes.c_int64 * 3


class CudaError(RuntimeError):
    """A failure reported by the native library (names the arch and the variant)."""


@functools.lru_cache(maxsize=None)
def _device_arch(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


_SYMBOLS = ("cs_last_error", "cs_resolve_family", "cs_query_tiles", "cs_scale_count", "cs_variant_supported",
            "cs_workspace_bytes", "cs_attention")
_load_errors: dict[int, str] = {}  # arch -> why _load gave None (refreshed with _load's cache)


@functools.lru_cache(maxsize=None)
def _load(arch: int):
    """The ctypes handle of the cached library covering ``arch``; None when it is missing or
    damaged (``_load_error`` says which). Never raises: see comfy_sage/native.py."""
    loaded = native.load(arch, abi_version=ABI_VERSION, symbols=_SYMBOLS)
    if loaded.lib is None:
        _load_errors[arch] = loaded.reason
        return None
    _load_errors.pop(arch, None)
    lib = loaded.lib
    c_int, c_size, c_void, c_float = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_float
    p_int = ctypes.POINTER(c_int)
    lib.cs_last_error.restype = ctypes.c_char_p
    lib.cs_resolve_family.argtypes = [c_int, c_int, c_int, c_int, p_int]
    lib.cs_query_tiles.argtypes = [c_int, c_int, c_int, c_int, p_int, p_int, p_int]
    lib.cs_scale_count.argtypes = [c_int] * 7 + [ctypes.POINTER(ctypes.c_int64)]
    lib.cs_variant_supported.argtypes = [c_int, c_int, c_int, c_int]
    lib.cs_workspace_bytes.argtypes = [c_int] * 13 + [ctypes.POINTER(c_size)]
    lib.cs_attention.argtypes = (
        [c_int, c_void, c_void, c_void, c_void, c_void] + [c_int] * 7 + [_I64x3] * 4
        + [c_int, c_int, c_int, c_int, c_int, c_float, c_void, c_size, c_void]
    )
    for name in _SYMBOLS[1:]:
        getattr(lib, name).restype = c_int
    return lib


def _load_error(arch: int) -> str:
    """Why there is no library for ``arch`` (missing or damaged, and the command that fixes it)."""
    _load(arch)
    return _load_errors.get(arch) or f"the native library for sm_{arch} could not be loaded, run python install.py"


def _lib_for(device: torch.device):
    return _load(_device_arch(device.index if device.index is not None else torch.cuda.current_device()))


def _check(lib, rc: int, arch: int, variant: str) -> None:
    if rc != 0:
        msg = lib.cs_last_error().decode(errors="replace")
        raise CudaError(f"comfy_sage cuda backend (sm_{arch}, variant {variant}): {msg}")


def _lib_or_raise(arch: int):
    lib = _load(arch)
    if lib is None:
        raise CudaError(f"comfy_sage cuda backend: {_load_error(arch)}")
    return lib


def _current_arch() -> int:
    return _device_arch(torch.cuda.current_device())


def resolve_family(pv_mode: PVMode, head_dim: int, arch: int,
                   family: Union[KernelFamily, str] = KernelFamily.AUTO) -> KernelFamily:
    """The family the library runs (pv_mode, head_dim) with on ``arch`` when asked for ``family``
    (csrc/abi.cu resolve_family); CudaError saying why when none can."""
    return _resolve_family(_lib_or_raise(arch), pv_mode, head_dim, arch, KernelFamily.parse(family, "family"))


def tiles(pv_mode: PVMode = PVMode.FP16, head_dim: int = 128, arch: Optional[int] = None,
          family: Union[KernelFamily, str] = KernelFamily.AUTO) -> Tiles:
    """The tiles the family that runs the variant quantizes with (the quantization groups follow
    them), as the library reports."""
    arch = _current_arch() if arch is None else arch
    return _tiles(_lib_or_raise(arch), pv_mode, head_dim, arch, KernelFamily.parse(family, "family"))


# Read once per library handle, variant, arch and family (a reloaded library is a new key).
@functools.lru_cache(maxsize=None)
def _resolve_family(lib, pv_mode: PVMode, head_dim: int, arch: int, family: KernelFamily) -> KernelFamily:
    out = ctypes.c_int()
    _check(lib, lib.cs_resolve_family(FAMILY_CODES[family], PV_CODES[pv_mode], head_dim, arch, ctypes.byref(out)),
           arch, variant_name(QKQuant.INT8, pv_mode))
    return next(f for f, c in FAMILY_CODES.items() if c == out.value)


@functools.lru_cache(maxsize=None)
def _tiles(lib, pv_mode: PVMode, head_dim: int, arch: int, family: KernelFamily) -> Tiles:
    out = [ctypes.c_int() for _ in range(3)]
    _check(lib, lib.cs_query_tiles(FAMILY_CODES[family], PV_CODES[pv_mode], head_dim, arch,
                                   *(ctypes.byref(o) for o in out)), arch, variant_name(QKQuant.INT8, pv_mode))
    return Tiles(blk_q=out[0].value, warp_q=out[1].value, blk_k=out[2].value)


def _strides(x: torch.Tensor, layout_code: int) -> "ctypes.Array":
    s = x.stride()
    return _I64x3(s[0], s[1], s[2]) if layout_code == 0 else _I64x3(s[0], s[2], s[1])


def _usable(x: torch.Tensor) -> torch.Tensor:
    """In place when the kernels can read it (last dim contiguous, 16-byte aligned rows), else a copy."""
    ok = x.stride(-1) == 1 and x.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in x.stride()[:-1])
    return x if ok else x.contiguous()


@torch.library.custom_op("comfy_sage::cuda_attention", mutates_args=())
def cuda_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: int, is_causal: bool,
                   sm_scale: float, return_lse: bool, pv_mode: int, granularity: int,
                   smooth_k: bool, smooth_v: bool, family: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v in layout 0 (HND: B,H,N,D) or 1 (NHD: B,N,H,D); returns (out in q's layout, lse
    (B,Hq,Lq) fp32, or an empty tensor when return_lse is False). family: a FAMILY_CODES value
    (0: the library's choice for the device)."""
    q, k, v = _usable(q), _usable(k), _usable(v)
    arch = _device_arch(q.device.index)
    lib = _load(arch)
    pv_name = next(m for m, c in PV_CODES.items() if c == pv_mode)
    variant = variant_name(QKQuant.INT8, pv_name)
    if lib is None:
        raise CudaError(f"comfy_sage cuda backend (sm_{arch}, variant {variant}): {_load_error(arch)}")
    if layout == 0:
        B, Hq, Lq, D = q.shape
        Hkv, Lk = k.shape[1], k.shape[2]
    else:
        B, Lq, Hq, D = q.shape
        Lk, Hkv = k.shape[1], k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Hq, Lq) if return_lse else (0,), dtype=torch.float32, device=q.device)
    nbytes = ctypes.c_size_t()
    _check(lib, lib.cs_workspace_bytes(family, B, Hq, Hkv, Lq, Lk, D, pv_mode, granularity, int(smooth_k),
                                       int(smooth_v), int(return_lse), arch, ctypes.byref(nbytes)), arch, variant)
    ws = torch.empty(max(nbytes.value, 1), dtype=torch.uint8, device=q.device)
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        rc = lib.cs_attention(
            family, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr() if return_lse else None,
            DTYPE_CODES[q.dtype], B, Hq, Hkv, Lq, Lk, D,
            _strides(q, layout), _strides(k, layout), _strides(v, layout), _strides(out, layout),
            pv_mode, granularity, int(smooth_k), int(smooth_v), int(is_causal), float(sm_scale), ws.data_ptr(),
            nbytes.value, stream)
    _check(lib, rc, arch, variant)
    return out, lse


@cuda_attention.register_fake
def _(q, k, v, layout, is_causal, sm_scale, return_lse, pv_mode, granularity, smooth_k, smooth_v, family):
    B, Hq, Lq = (q.shape[0], q.shape[1], q.shape[2]) if layout == 0 else (q.shape[0], q.shape[2], q.shape[1])
    out = q.new_empty(q.shape)
    lse = q.new_empty((B, Hq, Lq) if return_lse else (0,), dtype=torch.float32)
    return out, lse


class CudaBackend:
    name = "cuda"

    def availability(self) -> Optional[str]:
        if not torch.cuda.is_available():
            return "no CUDA device is visible to PyTorch"
        arch = _device_arch(torch.cuda.current_device())
        if _load(arch) is None:
            return _load_error(arch)
        return None

    def variants(self, device: torch.device) -> list[str]:
        if device.type != "cuda" or not torch.cuda.is_available():
            return []
        arch = _device_arch(device.index if device.index is not None else torch.cuda.current_device())
        lib = _load(arch)
        if lib is None:
            return []
        return [name for name, (qk, pv) in VARIANTS.items()
                if qk is QKQuant.INT8 and pv in PV_CODES and lib.cs_variant_supported(0, PV_CODES[pv], 128, arch)]

    def tiles(self, cfg, head_dim: int, device: torch.device) -> Tiles:
        if cfg.pv_mode not in PV_CODES or head_dim not in HEAD_DIMS:
            return cfg.tiles  # unsupported() will say why
        return tiles(cfg.pv_mode, head_dim, _device_arch(device.index if device.index is not None
                                                          else torch.cuda.current_device()))

    def unsupported(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Call) -> Optional[str]:
        cfg = call.cfg
        if q.device.type != "cuda":
            return f"q: expected a CUDA tensor, got device {q.device}"
        if call.head_dim not in HEAD_DIMS:
            return f"head_dim: the cuda backend supports 64|128 (after padding), got {call.head_dim}"
        if cfg.qk_quant is not QKQuant.INT8:
            return f"qk_quant: the cuda backend supports int8, got {cfg.qk_quant.value}"
        if cfg.smooth_q:
            return "smooth_q: not implemented by the cuda backend"
        if cfg.pv_mode not in PV_CODES:
            return f"pv_mode: the cuda backend supports {'|'.join(m.value for m in PV_CODES)}, got {cfg.pv_mode.value}"
        arch = _device_arch(q.device.index)
        lib = _load(arch)
        if lib is None:
            return _load_error(arch)
        if not lib.cs_variant_supported(0, PV_CODES[cfg.pv_mode], call.head_dim, arch):
            return f"variant {cfg.variant} is not available on sm_{arch}"
        own = tiles(cfg.pv_mode, call.head_dim, arch)
        if cfg.tiles != own:
            return f"tiles: the cuda kernels quantize with {own}, got {cfg.tiles}"
        hq = q.shape[1] if call.layout == "HND" else q.shape[2]
        if hq > 65535 or q.shape[0] > 65535:
            return "batch and head counts above 65535 are not supported"
        return None

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Call,
            family: Union[KernelFamily, str] = KernelFamily.AUTO):
        """family: AUTO (the library's choice) in the product; tests name one to run each
        family the device can run (it must quantize with ``call.cfg.tiles`` too)."""
        cfg = call.cfg
        out, lse = torch.ops.comfy_sage.cuda_attention(
            q, k, v, 0 if call.layout == "HND" else 1, bool(call.is_causal), float(call.sm_scale),
            bool(call.return_lse), PV_CODES[cfg.pv_mode], GRAN_CODES[cfg.granularity], bool(cfg.smooth_k),
            bool(cfg.smooth_v), FAMILY_CODES[KernelFamily.parse(family, "family")])
        return (out, lse) if call.return_lse else out


BACKEND = CudaBackend()
