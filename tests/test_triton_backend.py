"""The triton backend on the GPU against the reference with the same quantization."""

import math

import pytest
import torch

import comfy_sage
from comfy_sage import reference
from comfy_sage.accuracy import errors, float32_attention, make_inputs
from comfy_sage.backends.base import Call
from comfy_sage.config import QuantConfig, TensorLayout, Tiles

pytestmark = pytest.mark.gpu

# rel-L1 of triton against the reference computing the same quantization. What may differ:
# accumulation order (fp32: ~1e-6), exp2 on the GPU's approximate unit vs torch.exp (~1e-7
# relative in P), which moves a P element across an e4m3 rounding boundary now and then
# (one e4m3 step is 6%, hit by ~1e-6 of elements): well under 1e-2 on the output.
SAME_QUANT_BOUND = {"int8qk-fp16pv": 2e-3, "int8qk-fp8pv": 1e-2}
# Against float32: the reference's own error for the scheme (tests/test_reference.py) plus margin.
FLOAT32_BOUND = {"int8qk-fp16pv": 0.015, "int8qk-fp8pv": 0.045}


def _skip_unless_available():
    reason = comfy_sage.available_backends()["triton"]
    if reason is not None:
        pytest.skip(f"triton backend unavailable: {reason}")


def _variants():
    _skip_unless_available()
    return comfy_sage.variants("cuda")


SHAPES = [  # b, hq, hk, nq, nk, d, causal
    (1, 4, 4, 1000, 1000, 128, False),
    (2, 8, 2, 333, 77, 64, False),  # cross-attention to 77 text tokens, GQA
    (1, 2, 2, 1, 512, 128, False),  # a single query
    (1, 4, 4, 700, 700, 64, True),
    (1, 6, 3, 129, 300, 128, True),  # causal with Lq < Lk
    (3, 16, 16, 64, 512, 128, False),
]


@pytest.mark.parametrize("variant", ["int8qk-fp16pv", "int8qk-fp8pv"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matches_reference(variant, shape, layout, dtype):
    if f"triton.{variant}" not in _variants():
        pytest.skip(f"{variant} does not run on this GPU")
    b, hq, hk, nq, nk, d, causal = shape
    seed = torch.randint(0, 2**31, ()).item()  # fresh inputs every run
    q, k, v = make_inputs("k_bias", b, hq, nq, d, kv_tokens=nk, kv_heads=hk, dtype=dtype, device="cuda", seed=seed)
    if layout == "NHD":
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    out, lse = comfy_sage.sageattn(q, k, v, tensor_layout=layout, is_causal=causal, return_lse=True,
                                   backend="triton", variant=variant)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    from comfy_sage.backends.triton import BACKEND

    cfg = QuantConfig(pv_mode=variant.split("-")[1][:-2])
    cfg = QuantConfig(pv_mode=cfg.pv_mode, tiles=BACKEND.tiles(cfg, d, q.device))  # the kernel's groups
    ref, ref_lse = reference.attention(q, k, v, Call(TensorLayout(layout), causal, 1 / math.sqrt(d), True, cfg))
    to_hnd = (lambda x: x.transpose(1, 2)) if layout == "NHD" else (lambda x: x)
    assert errors(out, ref).rel_l1 < SAME_QUANT_BOUND[variant], seed
    # The lse sees the same INT8 scores; only exp/log rounding differs.
    assert (lse - ref_lse).abs().max().item() < 1e-3, seed
    exact = float32_attention(to_hnd(q), to_hnd(k), to_hnd(v), is_causal=causal)
    assert errors(to_hnd(out), exact).rel_l1 < FLOAT32_BOUND[variant], seed


@pytest.mark.parametrize("granularity", ["per_thread", "per_warp", "per_block"])
@pytest.mark.parametrize("tiles", [Tiles(128, 32, 64), Tiles(64, 16, 128)], ids=["mma", "wgmma"])
def test_every_granularity_and_tiling_matches_reference(granularity, tiles):
    _skip_unless_available()
    q, k, v = make_inputs("token_scale", 1, 4, 517, 128, dtype=torch.float16, device="cuda",
                          seed=torch.randint(0, 2**31, ()).item())
    out = comfy_sage.sageattn(q, k, v, backend="triton", variant="int8qk-fp16pv", qk_granularity=granularity,
                              tiles=tiles)
    cfg = QuantConfig(pv_mode="fp16", granularity=granularity, tiles=tiles)
    ref = reference.attention(q, k, v, Call(TensorLayout.HND, False, 1 / math.sqrt(128), False, cfg))
    assert errors(out, ref).rel_l1 < SAME_QUANT_BOUND["int8qk-fp16pv"]


@pytest.mark.parametrize("pv_mode", ["fp16", "fp8"])
@pytest.mark.parametrize("n", [1, 77, 300])
def test_output_is_fully_written(pv_mode, n):
    _skip_unless_available()
    from comfy_sage.backends.triton import launch

    q, k, v = make_inputs("gaussian", 2, 2, n, 64, kv_tokens=n + 13, dtype=torch.bfloat16, device="cuda",
                          seed=torch.randint(0, 2**31, ()).item())
    out = torch.full_like(q, float("nan"))
    lse = torch.full((2, 2, n), float("nan"), device="cuda")
    launch(q, k, v, out, lse, False, False, 0.125, pv_mode, "per_thread", True, 128, 32, 64)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()


def test_unsupported_calls_are_refused_before_launch():
    _skip_unless_available()
    q, k, v = make_inputs("gaussian", 1, 2, 64, 256, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="head dim 256"):
        comfy_sage.sageattn(q, k, v, backend="triton")
    q, k, v = make_inputs("gaussian", 1, 2, 64, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="smooth_q is not implemented"):
        comfy_sage.sageattn(q, k, v, backend="triton", smooth_q=True)
    with pytest.raises(ValueError, match="pv_mode=int8"):
        comfy_sage.sageattn(q, k, v, backend="triton", variant="int8qk-int8pv")


def test_opcheck_and_compile():
    _skip_unless_available()
    q, k, v = make_inputs("gaussian", 1, 2, 128, 64, dtype=torch.float16, device="cuda")
    args = (q, k, v, False, False, 0.125, True, "fp16", "per_thread", True, 128, 32, 64)
    torch.library.opcheck(torch.ops.comfy_sage.triton_attention.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda a, b, c: comfy_sage.sageattn(a, b, c, backend="triton"))
    assert errors(fn(q, k, v), comfy_sage.sageattn(q, k, v, backend="triton")).rel_l1 == 0
