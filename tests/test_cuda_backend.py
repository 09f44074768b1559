"""GPU tests of the native CUDA backend against the reference (same quantization) and float32.

Marker ``gpu``: skipped without CUDA (tests/conftest.py). The library is built once per session
for the GPU present (``comfy_sage.build``); a build failure fails the tests, it is not skipped.
Every kernel family the device runs is tested, selected through the C ABI's ``family``
argument (``CudaBackend.run(..., family=)``); the cases come from csrc/configs.json (the table
the build compiles), so only families that exist for the device's arch are collected.

Tight bound (same QuantConfig as the kernel, tiles from the library): the kernel and the
reference quantize Q, K, V with the same groups and the same round-to-nearest-even, so what
remains is (1) fp32 summation order (Q·Kᵀ is exact in int32 in the kernel, a float matmul of
dequantized values in the reference: ~1e-7 relative on the logits; the V mean of V smoothing,
summed in another order: ~1e-7 relative, which can move a V element across an int8 rounding
boundary), (2) exp2.approx with the folded sm_scale·log2e against torch.exp (~2^-22 relative),
which occasionally moves a P value across a rounding boundary of its 8-bit or fp16 format (one
step of e4m3 is 1/16 of the value, of u8 1/255 of the max, but only for the rare element sitting
within ~1e-6 of a boundary), and (3) both outputs rounded to fp16/bf16 (half an ulp, 2^-9
relative for bf16, when they fall on different sides of a boundary). Together that is far below
1e-3 of rel-L1; we allow 2e-3 for bf16 output and 1e-3 for fp16. The loose bound against float32
is the variant's quantization error itself (issue 3: FP8 P·V rel-L1 ≤ 0.038, FP16 P·V ≤ 0.012 on
Gaussian inputs).
"""

from __future__ import annotations

import math

import pytest
import torch

from comfy_sage import build, reference
from comfy_sage.accuracy import errors, make_inputs
from comfy_sage.call import Call
from comfy_sage.config import PVMode, QKGranularity, QKQuant, QuantConfig, TensorLayout

pytestmark = pytest.mark.gpu

PV_MODES = [PVMode.FP16, PVMode.FP16_ACC16, PVMode.FP8, PVMode.FP8_ACC16, PVMode.INT8]
LOOSE_REL_L1 = {PVMode.FP16: 0.02, PVMode.FP16_ACC16: 0.02, PVMode.INT8: 0.03, PVMode.FP8: 0.05,
                PVMode.FP8_ACC16: 0.06}


def _device_arch() -> int:
    if not torch.cuda.is_available():
        return 0
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


ARCH = _device_arch()
TABLE = build.kernel_table()


def _families(pv: PVMode, head_dim: int) -> list[str]:
    """Families of the table with a kernel for (pv, head_dim) that run on this device's arch (on a
    machine without a GPU: every family with the kernel; the gpu marker skips them there)."""
    return [c["family"] for c in TABLE["configs"]
            if c["pv"] == pv.value and c["head_dim"] == head_dim
            and (ARCH == 0 or ARCH in TABLE["families"][c["family"]]["archs"])]


def _auto_family(pv: PVMode, head_dim: int) -> str:
    """What the library's CS_FAMILY_AUTO should pick: the table's auto_order, first that runs."""
    return next(f for f in TABLE["auto_order"] if f in _families(pv, head_dim))


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
CASES = [pytest.param(shape, pv, fam, id=f"{'x'.join(map(str, shape[:6]))}{'-causal' if shape[6] else ''}-{pv.value}-{fam}")
         for shape in SHAPES for pv in PV_MODES for fam in _families(pv, shape[5])
         if not (pv in (PVMode.FP8, PVMode.FP8_ACC16) and 0 < ARCH < 89)]
# Modes with more than one family somewhere (the 32-row-warp kernel's): the tests that vary
# granularity, scale range and V smoothing run each of their families.
FAMILY_MODES = [pytest.param(pv, fam, id=f"{pv.value}-{fam}") for pv in (PVMode.FP16, PVMode.INT8)
                for fam in _families(pv, 128)]


@pytest.fixture(scope="session")
def cuda_backend():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from comfy_sage.backends import cuda

    arch = cuda._device_arch(torch.cuda.current_device())
    if build.find_library(arch) is None:
        target = max(a for a in build.SUPPORTED_ARCHS if a // 10 == arch // 10 and a <= arch)
        build.build([target])
        cuda._load.cache_clear()
    assert cuda.BACKEND.availability() is None, cuda.BACKEND.availability()
    return cuda


def _inputs(B, Hq, Hkv, Lq, Lk, D, dtype, layout, v_bias=0.0):
    def make(h, n):
        x = torch.randn(B, h, n, D, device="cuda", dtype=torch.float32)
        return x

    def laid(x):
        x = x.to(dtype)
        return x if layout is TensorLayout.HND else x.transpose(1, 2).contiguous()

    v = make(Hkv, Lk)
    if v_bias:
        v = v + v_bias * torch.randn(B, Hkv, 1, D, device="cuda")
    return laid(make(Hq, Lq)), laid(make(Hkv, Lk) + 0.5), laid(v)


def _poison_allocator(nbytes: int):
    """Fill the caching allocator's next blocks with NaN so an unwritten output element shows."""
    junk = [torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda") for _ in range(2)]
    del junk


def _cfg(cuda, pv, head_dim, family, **kw) -> QuantConfig:
    return QuantConfig(pv_mode=pv, tiles=cuda.tiles(pv, head_dim, family=family), **kw)


def _run(cuda, q, k, v, call, family="auto"):
    if family == "auto":  # unsupported() knows the product path's (auto family's) tiles only
        assert cuda.BACKEND.unsupported(q, k, v, call) is None
    _poison_allocator(q.numel() * q.element_size())
    return cuda.BACKEND.run(q, k, v, call, family=family)


@pytest.mark.parametrize("shape, pv, family", CASES)
def test_matches_reference(cuda_backend, shape, pv, family):
    B, Hq, Hkv, Lq, Lk, D, causal = shape
    cuda = cuda_backend
    i = SHAPES.index(shape) + PV_MODES.index(pv)
    dtype = (torch.float16, torch.bfloat16)[i % 2]
    layout = (TensorLayout.HND, TensorLayout.NHD)[(i // 2) % 2]
    cfg = QuantConfig(qk_quant=QKQuant.INT8, granularity=QKGranularity.PER_THREAD, pv_mode=pv,
                      tiles=cuda.tiles(pv, D, family=family))
    call = Call(layout=layout, is_causal=causal, sm_scale=1 / math.sqrt(D), return_lse=True, cfg=cfg, head_dim=D)
    q, k, v = _inputs(B, Hq, Hkv, Lq, Lk, D, dtype, layout)
    out, lse = _run(cuda, q, k, v, call, family)
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (B, Hq, Lq)
    assert torch.isfinite(out).all(), "unwritten or NaN output elements"
    ref, ref_lse = reference.attention(q, k, v, call)
    tight = errors(out, ref)
    bound = 2e-3 if dtype is torch.bfloat16 else 1e-3
    if family == "sm90":  # one FFMA for the exp2 argument (and FP8 wgmma accumulation): tests/test_sm90.py says why
        bound = 4e-3
    assert tight.rel_l1 <= bound, f"vs reference (same quantization): {tight}"
    assert torch.allclose(lse, ref_lse, atol=2e-3, rtol=1e-4), (lse - ref_lse).abs().max()
    exact = reference.attention(q, k, v, Call(layout, causal, call.sm_scale, False,
                                              QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE), head_dim=D))
    loose = errors(out, exact.float())
    assert loose.rel_l1 <= LOOSE_REL_L1[pv] and loose.cos >= 0.995, f"vs float32: {loose}"


@pytest.mark.parametrize("gran", [QKGranularity.PER_WARP, QKGranularity.PER_BLOCK], ids=lambda g: g.value)
@pytest.mark.parametrize("pv, family", FAMILY_MODES)
def test_granularities(cuda_backend, gran, pv, family):
    cuda = cuda_backend
    cfg = QuantConfig(granularity=gran, pv_mode=pv, tiles=cuda.tiles(pv, 128, family=family))
    call = Call(TensorLayout.HND, False, 0.1, False, cfg, head_dim=128)
    q, k, v = _inputs(2, 4, 4, 257, 190, 128, torch.float16, TensorLayout.HND)
    out = _run(cuda, q, k, v, call, family)
    assert errors(out, reference.attention(q, k, v, call)).rel_l1 <= 1e-3


@pytest.mark.parametrize("smooth_v", [True, False], ids=["smooth_v", "raw_v"])
@pytest.mark.parametrize("family", _families(PVMode.INT8, 128))
def test_v_smoothing_matches_reference(cuda_backend, family, smooth_v):
    """INT8 P·V on V with a per-channel offset (the inputs V smoothing is for), with and without
    it: the kernel computes what the reference computes (tight bound, module docstring)."""
    cuda = cuda_backend
    cfg = _cfg(cuda, PVMode.INT8, 128, family, smooth_v=smooth_v)
    call = Call(TensorLayout.NHD, True, 1 / math.sqrt(128), True, cfg, head_dim=128)
    q, k, v = _inputs(2, 4, 2, 300, 700, 128, torch.bfloat16, TensorLayout.NHD, v_bias=2.0)
    out, lse = _run(cuda, q, k, v, call, family)
    ref, ref_lse = reference.attention(q, k, v, call)
    assert errors(out, ref).rel_l1 <= 2e-3
    assert torch.allclose(lse, ref_lse, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("family", _families(PVMode.INT8, 128))
def test_v_smoothing_meets_the_biased_v_target(cuda_backend, family):
    """Issue 8's target for INT8 P·V on V + N(0, 2²) per-channel offsets: rel-L1 ≤ 0.005 against
    float32 (V smoothing is on by default: QuantConfig.smooth_v)."""
    cuda = cuda_backend
    q, k, v = make_inputs("v_bias", 1, 8, 4096, 128, dtype=torch.bfloat16, device="cuda", seed=3)
    cfg = _cfg(cuda, PVMode.INT8, 128, family)
    assert cfg.smooth_v
    out = _run(cuda, q, k, v, Call(TensorLayout.HND, False, 1 / math.sqrt(128), False, cfg, head_dim=128), family)
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert errors(out, exact).rel_l1 <= 0.005


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
        torch.ops.comfy_sage.cuda_attention(q, k, k, 0, False, 0.1, False, 0, 0, True, True, 0)


def test_explicit_family_is_never_replaced(cuda_backend):
    """A family asked for by name that has no kernel for the call fails with the reason; the
    library does not quietly run another family."""
    cuda = cuda_backend
    q = torch.randn(1, 2, 64, 128, device="cuda", dtype=torch.float16)
    assert "w32" not in _families(PVMode.FP8, 128)  # the table's 32-row warps: FP16 and INT8 P·V only
    with pytest.raises(cuda.CudaError, match="family w32"):
        torch.ops.comfy_sage.cuda_attention(q, q, q, 0, False, 0.1, False, cuda.PV_CODES[PVMode.FP8], 0, True, True,
                                            cuda.FAMILY_CODES[cuda.KernelFamily.W32])
    with pytest.raises(cuda.CudaError, match="family w32"):
        cuda.resolve_family(PVMode.FP8, 128, ARCH, "w32")


def test_opcheck(cuda_backend):
    q = torch.randn(1, 2, 70, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(1, 2, 90, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(1, 2, 90, 64, device="cuda", dtype=torch.float16)
    torch.library.opcheck(torch.ops.comfy_sage.cuda_attention.default,
                          (q, k, v, 0, False, 0.125, True, 3, 0, True, True, 0))


QUANT_KERNELS = ("quant_int8_kernel", "token_partial_sum_kernel", "token_mean_kernel", "v_amax_kernel",
                 "v_quant_kernel", "v_to_f16_kernel",  # csrc/quant/quant.cu
                 "kv_stats_kernel", "quant_q_kernel", "quant_kv_kernel")  # csrc/sm90/quant.cuh


@pytest.mark.parametrize("pv", [PVMode.FP16, PVMode.INT8], ids=lambda m: m.value)
def test_kernel_choice(cuda_backend, pv):
    """The library's own choice (family auto) is the first family of configs.json's auto_order
    that runs on this arch, and that family's kernel is the one launched; an explicit family
    launches its own kernel."""
    cuda = cuda_backend
    expected = _auto_family(pv, 128)
    assert cuda.resolve_family(pv, 128, ARCH) == expected
    q, k, v = _inputs(1, 2, 2, 256, 256, 128, torch.float16, TensorLayout.HND)

    def kernels(family) -> set[str]:
        call = Call(TensorLayout.HND, False, 0.1, False, _cfg(cuda, pv, 128, family), head_dim=128)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            _run(cuda, q, k, v, call, family)
            torch.cuda.synchronize()
        return {e.name for e in prof.events() if "cs::" in e.name and not any(n in e.name for n in QUANT_KERNELS)}

    for family in ["auto", *_families(pv, 128)]:
        names = kernels(family)
        want = expected if family == "auto" else family
        assert len(names) == 1 and want in next(iter(names)), (family, names)


@pytest.mark.parametrize("pv, family", FAMILY_MODES)
def test_tiny_scales_stay_finite(cuda_backend, pv, family):
    """Q and K of magnitude 1e-30: their int8 scales multiply to below the float range, so the
    logits' scale underflows. The kernels must still give the reference's (uniform) attention,
    finite also at masked positions (partial last block, causal)."""
    cuda = cuda_backend
    call = Call(TensorLayout.HND, True, 1 / math.sqrt(128), False, _cfg(cuda, pv, 128, family), head_dim=128)
    q, k, v = _inputs(1, 2, 2, 200, 200, 128, torch.bfloat16, TensorLayout.HND)
    q, k = q * 1e-30, (k - 0.5) * 1e-30
    out = _run(cuda, q, k, v, call, family)
    assert torch.isfinite(out).all()
    assert errors(out, reference.attention(q, k, v, call)).rel_l1 <= 2e-3


def test_rejects_nonpositive_scale(cuda_backend):
    q = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.float16)
    for bad in (0.0, -0.125, float("nan")):
        with pytest.raises(cuda_backend.CudaError, match="sm_scale"):
            torch.ops.comfy_sage.cuda_attention(q, q, q, 0, False, bad, False, 0, 0, True, True, 0)
