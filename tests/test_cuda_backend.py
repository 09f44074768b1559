"""GPU tests of the native CUDA backend against the reference (same quantization) and float32.

Marker ``gpu``: skipped without CUDA (tests/conftest.py). The library is built once per session
for the GPU present (``comfy_sage.build``); a build failure fails the tests, it is not skipped.

Tight bound (same QuantConfig as the kernel, tiles from the library): the kernel and the
reference quantize Q, K, V with the same groups and the same round-to-nearest-even, so what
remains is (1) fp32 summation order (Q·Kᵀ is exact in int32 in the kernel, a float matmul of
dequantized values in the reference: ~1e-7 relative on the logits), (2) exp2.approx with the
folded sm_scale·log2e against torch.exp (~2^-22 relative), which occasionally moves a P value
across a rounding boundary of its 8-bit or fp16 format (one step of e4m3 is 1/16 of the value,
of u8 1/255 of the max, but only for the rare element sitting within ~1e-6 of a boundary), and
(3) both outputs rounded to fp16/bf16 (half an ulp, 2^-9 relative for bf16, when they fall on
different sides of a boundary). Together that is far below 1e-3 of rel-L1; we allow 2e-3 for
bf16 output and 1e-3 for fp16. The loose bound against float32 is the variant's quantization
error itself (issue 3: FP8 P·V rel-L1 ≤ 0.038, FP16 P·V ≤ 0.012 on Gaussian inputs).
"""

from __future__ import annotations

import math

import pytest
import torch

from comfy_sage import reference
from comfy_sage.accuracy import errors
from comfy_sage.backends.base import Call
from comfy_sage.config import PVMode, QKGranularity, QKQuant, QuantConfig, TensorLayout

pytestmark = pytest.mark.gpu

PV_MODES = [PVMode.FP16, PVMode.FP16_ACC16, PVMode.FP8, PVMode.FP8_ACC16, PVMode.INT8]
W32_MODES = (PVMode.FP16, PVMode.INT8)  # csrc/attn_launch.h w32_mode: 32-row warps on sm_90
LOOSE_REL_L1 = {PVMode.FP16: 0.02, PVMode.FP16_ACC16: 0.02, PVMode.INT8: 0.03, PVMode.FP8: 0.05,
                PVMode.FP8_ACC16: 0.06}

# (B, Hq, Hkv, Lq, Lk, D, causal)
SHAPES = [
    (1, 2, 2, 1, 1, 64, False),          # N = 1
    (1, 2, 2, 1, 77, 128, False),        # one query, text-length keys
    (2, 4, 4, 200, 77, 64, False),       # cross-attention to 77 tokens, N not a multiple of 128
    (1, 4, 4, 333, 512, 128, False),     # kv length 512
    (1, 8, 2, 300, 300, 128, True),      # GQA, causal, partial tiles
    (1, 2, 2, 130, 500, 64, True),       # causal with Lq < Lk (top-left aligned)
    (1, 2, 2, 500, 130, 128, True),      # causal with Lq > Lk
    (24, 16, 16, 130, 130, 64, False),   # large B x H
]


@pytest.fixture(scope="session")
def cuda_backend():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from comfy_sage import build
    from comfy_sage.backends import cuda

    arch = cuda._device_arch(torch.cuda.current_device())
    if build.find_library(arch) is None:
        target = max(a for a in build.SUPPORTED_ARCHS if a // 10 == arch // 10 and a <= arch)
        build.build([target])
        cuda._load.cache_clear()
    assert cuda.BACKEND.availability() is None, cuda.BACKEND.availability()
    return cuda


def _inputs(B, Hq, Hkv, Lq, Lk, D, dtype, layout):
    def make(h, n):
        x = torch.randn(B, h, n, D, device="cuda", dtype=torch.float32)
        x = x.to(dtype)
        return x if layout is TensorLayout.HND else x.transpose(1, 2).contiguous()
    return make(Hq, Lq), make(Hkv, Lk) + 0.5, make(Hkv, Lk)


def _poison_allocator(nbytes: int):
    """Fill the caching allocator's next blocks with NaN so an unwritten output element shows."""
    junk = [torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda") for _ in range(2)]
    del junk


def _run(cuda, q, k, v, call):
    if call.cfg.pv_mode in (PVMode.FP8, PVMode.FP8_ACC16) and torch.cuda.get_device_capability()[0] < 9 \
            and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 P·V needs sm89+")
    assert cuda.BACKEND.unsupported(q, k, v, call) is None
    _poison_allocator(q.numel() * q.element_size())
    return cuda.BACKEND.run(q, k, v, call)


@pytest.fixture(params=["default", "w16"])
def kernel(request, monkeypatch):
    """Which kernel runs: the library's choice, or (COMFY_SAGE_CUDA_KERNEL=w16) the 16-row kernel
    that sm_80/86/89/120 run, which on sm_90 FP16 and INT8 P·V would otherwise not reach."""
    if request.param == "w16":
        monkeypatch.setenv("COMFY_SAGE_CUDA_KERNEL", "w16")
    else:
        monkeypatch.delenv("COMFY_SAGE_CUDA_KERNEL", raising=False)
    return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + ("-causal" if s[6] else ""))
@pytest.mark.parametrize("pv", PV_MODES, ids=lambda m: m.value)
def test_matches_reference(cuda_backend, kernel, shape, pv):
    if kernel == "w16" and pv not in W32_MODES:
        pytest.skip("this mode runs the 16-row kernel either way")
    B, Hq, Hkv, Lq, Lk, D, causal = shape
    cuda = cuda_backend
    i = SHAPES.index(shape) + PV_MODES.index(pv)
    dtype = (torch.float16, torch.bfloat16)[i % 2]
    layout = (TensorLayout.HND, TensorLayout.NHD)[(i // 2) % 2]
    cfg = QuantConfig(qk_quant=QKQuant.INT8, granularity=QKGranularity.PER_THREAD, pv_mode=pv,
                      tiles=cuda.tiles(pv, D))
    call = Call(layout=layout, is_causal=causal, sm_scale=1 / math.sqrt(D), return_lse=True, cfg=cfg, head_dim=D)
    q, k, v = _inputs(B, Hq, Hkv, Lq, Lk, D, dtype, layout)
    out, lse = _run(cuda, q, k, v, call)
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (B, Hq, Lq)
    assert torch.isfinite(out).all(), "unwritten or NaN output elements"
    ref, ref_lse = reference.attention(q, k, v, call)
    tight = errors(out, ref)
    bound = 2e-3 if dtype is torch.bfloat16 else 1e-3
    assert tight.rel_l1 <= bound, f"vs reference (same quantization): {tight}"
    assert torch.allclose(lse, ref_lse, atol=2e-3, rtol=1e-4), (lse - ref_lse).abs().max()
    exact = reference.attention(q, k, v, Call(layout, causal, call.sm_scale, False,
                                              QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE), head_dim=D))
    loose = errors(out, exact.float())
    assert loose.rel_l1 <= LOOSE_REL_L1[pv] and loose.cos >= 0.995, f"vs float32: {loose}"


@pytest.mark.parametrize("gran", [QKGranularity.PER_WARP, QKGranularity.PER_BLOCK], ids=lambda g: g.value)
@pytest.mark.parametrize("pv", [PVMode.FP16, PVMode.INT8], ids=lambda m: m.value)
def test_granularities(cuda_backend, kernel, gran, pv):
    cuda = cuda_backend
    cfg = QuantConfig(granularity=gran, pv_mode=pv, tiles=cuda.tiles(pv, 128))
    call = Call(TensorLayout.HND, False, 0.1, False, cfg, head_dim=128)
    q, k, v = _inputs(2, 4, 4, 257, 190, 128, torch.float16, TensorLayout.HND)
    out = _run(cuda, q, k, v, call)
    assert errors(out, reference.attention(q, k, v, call)).rel_l1 <= 1e-3


def test_no_smoothing_and_no_lse(cuda_backend):
    cuda = cuda_backend
    cfg = QuantConfig(pv_mode=PVMode.FP16, smooth_k=False, tiles=cuda.tiles(PVMode.FP16, 64))
    call = Call(TensorLayout.NHD, True, 0.125, False, cfg, head_dim=64)
    q, k, v = _inputs(1, 2, 1, 100, 100, 64, torch.bfloat16, TensorLayout.NHD)
    out = _run(cuda, q, k, v, call)
    assert errors(out, reference.attention(q, k, v, call)).rel_l1 <= 2e-3


def test_unsupported_reasons(cuda_backend):
    cuda = cuda_backend
    q = torch.randn(1, 2, 8, 256, device="cuda", dtype=torch.float16)
    call = Call(TensorLayout.HND, False, 0.1, False, QuantConfig(pv_mode=PVMode.FP16), head_dim=256)
    assert "head_dim" in cuda.BACKEND.unsupported(q, q, q, call)
    q = torch.randn(1, 2, 8, 64, device="cuda", dtype=torch.float16)
    call = Call(TensorLayout.HND, False, 0.1, False, QuantConfig(qk_quant=QKQuant.INT4), head_dim=64)
    assert "qk_quant" in cuda.BACKEND.unsupported(q, q, q, call)


def test_error_names_arch_and_variant(cuda_backend):
    cuda = cuda_backend
    q = torch.randn(1, 3, 8, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(1, 2, 8, 64, device="cuda", dtype=torch.float16)  # 3 % 2 != 0
    with pytest.raises(cuda.CudaError, match=r"sm_\d+, variant int8qk-fp16pv"):
        torch.ops.comfy_sage.cuda_attention(q, k, k, 0, False, 0.1, False, 0, 0, True)


def test_opcheck(cuda_backend):
    q = torch.randn(1, 2, 70, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(1, 2, 90, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(1, 2, 90, 64, device="cuda", dtype=torch.float16)
    torch.library.opcheck(torch.ops.comfy_sage.cuda_attention.default, (q, k, v, 0, False, 0.125, True, 3, 0, True))


@pytest.mark.parametrize("pv", W32_MODES, ids=lambda m: m.value)
def test_kernel_choice(cuda_backend, monkeypatch, pv):
    """On sm_90 FP16 and INT8 P·V run the 32-row-warp kernel (the benchmarks' numbers are its);
    COMFY_SAGE_CUDA_KERNEL=w16 and every other arch run the 16-row kernel."""
    cuda = cuda_backend
    cfg = QuantConfig(pv_mode=pv, tiles=cuda.tiles(pv, 128))
    call = Call(TensorLayout.HND, False, 0.1, False, cfg, head_dim=128)
    q, k, v = _inputs(1, 2, 2, 256, 256, 128, torch.float16, TensorLayout.HND)

    def kernels() -> set[str]:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            _run(cuda, q, k, v, call)
            torch.cuda.synchronize()
        return {e.name for e in prof.events() if "attn_" in e.name}

    monkeypatch.delenv("COMFY_SAGE_CUDA_KERNEL", raising=False)
    names = kernels()
    w32 = torch.cuda.get_device_capability() == (9, 0)
    assert any(("attn_w32_kernel" in n) == w32 for n in names) and len(names) == 1, names
    monkeypatch.setenv("COMFY_SAGE_CUDA_KERNEL", "w16")
    names = kernels()
    assert len(names) == 1 and "attn_kernel" in next(iter(names)), names


@pytest.mark.parametrize("pv", W32_MODES, ids=lambda m: m.value)
def test_tiny_scales_stay_finite(cuda_backend, kernel, pv):
    """Q and K of magnitude 1e-30: their int8 scales multiply to below the float range, so the
    logits' scale underflows. The kernels must still give the reference's (uniform) attention,
    finite also at masked positions (partial last block, causal)."""
    cuda = cuda_backend
    cfg = QuantConfig(pv_mode=pv, tiles=cuda.tiles(pv, 128))
    call = Call(TensorLayout.HND, True, 1 / math.sqrt(128), False, cfg, head_dim=128)
    q, k, v = _inputs(1, 2, 2, 200, 200, 128, torch.bfloat16, TensorLayout.HND)
    q, k = q * 1e-30, (k - 0.5) * 1e-30
    out = _run(cuda, q, k, v, call)
    assert torch.isfinite(out).all()
    assert errors(out, reference.attention(q, k, v, call)).rel_l1 <= 2e-3


def test_rejects_nonpositive_scale(cuda_backend):
    q = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.float16)
    for bad in (0.0, -0.125, float("nan")):
        with pytest.raises(cuda_backend.CudaError, match="sm_scale"):
            torch.ops.comfy_sage.cuda_attention(q, q, q, 0, False, bad, False, 0, 0, True)
