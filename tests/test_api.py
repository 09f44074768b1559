"""sageattn: validation errors, layouts, padding, dtypes, masks, backend choice."""

import dataclasses
import logging
import math
import types

import pytest
import torch
import torch.nn.functional as F

import comfy_sage
from comfy_sage import api, dispatch, log, plan, sageattn
from comfy_sage.accuracy import errors, float32_attention, make_inputs
from comfy_sage.config import PVMode


def qkv(b=1, h=2, n=64, d=64, nk=None, hk=None, dtype=torch.float16, layout="HND", seed=0):
    q, k, v = make_inputs("gaussian", b, h, n, d, kv_tokens=nk, kv_heads=hk, dtype=dtype, seed=seed)
    if layout == "NHD":
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    return q, k, v


# --- validation: every error names the argument, the value and what is supported --------------

@pytest.mark.parametrize("mutate,match", [
    (lambda q, k, v: (q[0], k, v), r"q: expected a 4-D tensor \(B, H, N, D\) for tensor_layout='HND', got shape"),
    (lambda q, k, v: (q, k.int(), v), r"k: expected dtype float16\|bfloat16\|float32, got torch.int32"),
    (lambda q, k, v: (q, k, v.float()), r"q, k, v: expected one dtype"),
    (lambda q, k, v: (q[:, :, :0], k, v), r"q: empty tensor"),
    (lambda q, k, v: (q.transpose(2, 3), k, v), r"q: the last \(head\) dimension must be contiguous"),
    (lambda q, k, v: (q, k[:, :, :10], v), r"k, v: expected the same shape"),
    (lambda q, k, v: (q, k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1)), r"q, k: batch sizes differ"),
    (lambda q, k, v: (q, k[..., :32].contiguous(), v[..., :32].contiguous()), r"head dims differ"),
    (lambda q, k, v: (q.repeat(1, 3, 1, 1), k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)),
     r"k: 4 kv heads must divide the 6 query heads"),
    (lambda q, k, v: (F.pad(q, (0, 200)), F.pad(k, (0, 200)), F.pad(v, (0, 200))),
     r"q: head dim 264 is not supported; supported: 1..256"),
    (lambda q, k, v: ("q", k, v), r"q: expected a torch.Tensor, got str"),
    (lambda q, k, v: (q, k.to("meta"), v), r"q, k, v: expected one device, got cpu, meta, cpu"),
])
def test_tensor_errors(mutate, match):
    q, k, v = mutate(*qkv())
    with pytest.raises((ValueError, TypeError), match=match):
        sageattn(q, k, v)
    with pytest.raises((ValueError, TypeError), match=match):
        plan(q, k, v)  # plan is where sageattn validates


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(tensor_layout="BNHD"), ValueError, r"tensor_layout: expected one of HND\|NHD, got 'BNHD'"),
    (dict(backend="flash3"), ValueError, r"backend: expected one of auto\|cuda\|triton\|reference\|sdpa"),
    (dict(backend="reference", variant="int9qk"), ValueError, r"variant: expected one of int8qk-fp8pv\|"),
    (dict(backend="sdpa", variant="int8qk-fp8pv"), ValueError, r"variant: for backend='sdpa' expected one of"),
    (dict(backend="reference", pv_mode="fp4"), ValueError, r"pv_mode: expected one of none\|fp16\|"),
    (dict(backend="reference", qk_granularity="per_head"), ValueError, r"qk_granularity: expected one of"),
    (dict(backend="reference", qk_quant="int2"), ValueError, r"qk_quant: expected one of int8\|int4\|none"),
    (dict(sm_scale=-1.0), ValueError, r"sm_scale: expected a positive finite number, got -1.0"),
    (dict(sm_scale=float("nan")), ValueError, r"sm_scale: expected a positive finite number"),
    (dict(is_causal="yes"), TypeError, r"is_causal: expected bool, got str"),
    (dict(smooth_k=1), TypeError, r"smooth_k: expected bool, got int"),
    (dict(tiles=(128, 32, 64)), TypeError, r"tiles: expected comfy_sage.config.Tiles"),
    (dict(dropout_p=0.1), TypeError, r"unexpected keyword argument\(s\) \['dropout_p'\]"),
    (dict(sm_scale=True), TypeError, r"sm_scale: expected a positive finite number or None, got bool"),
    (dict(sm_scale="0.1"), TypeError, r"sm_scale: expected a positive finite number or None, got str"),
    (dict(return_lse=1), TypeError, r"return_lse: expected bool, got int"),
    (dict(variant=["int8qk-fp8pv"]), TypeError, r"variant: expected a str or None, got list"),
    (dict(backend="reference", pv_mode=["fp8"]), TypeError, r"pv_mode: expected a str or None, got list"),
    (dict(backend=["auto"]), ValueError, r"backend: expected one of auto\|"),
    (dict(tensor_layout=None), ValueError, r"tensor_layout: expected one of HND\|NHD, got None"),
    (dict(backend="sdpa", variant="cudnn"), ValueError, r"variant: SDPA kernel 'cudnn' runs on CUDA tensors only; "
                                                        r"on cpu: default\|math"),
    (dict(backend="reference", qk_granularity="per_warp", qk_quant_gran="per_block"), ValueError,
     r"qk_granularity='per_warp' and its alias qk_quant_gran='per_block' differ"),
])
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sageattn(*qkv(), **kwargs)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_a_backend_that_cannot_run_says_why(backend):
    # CPU tensors: unavailable on a CPU-only host, unsupported (CUDA tensors only) where it is available.
    q, k, v = qkv()
    p = plan(q, k, v, backend=backend)
    assert p.error is not None and not p.quantized and p.reason is not None
    if comfy_sage.available_backends()[backend] is None:
        match = rf"backend='{backend}' cannot run this call: .*(CUDA|cuda)"
    else:
        match = rf"backend='{backend}' is not available here: "
    with pytest.raises(ValueError, match=match):
        sageattn(q, k, v, backend=backend)


def test_the_alias_alone_and_the_same_value_twice():
    q, k, v = qkv()
    a = sageattn(q, k, v, backend="reference", qk_granularity="per_warp", qk_quant_gran="per_warp")
    b = sageattn(q, k, v, backend="reference", qk_granularity="per_warp")
    assert torch.equal(a, b)


def test_plan_is_frozen_and_says_what_runs():
    q, k, v = qkv(d=40)
    p = plan(q, k, v, backend="reference", variant="int8qk-fp16pv")
    assert (p.requested, p.backend, p.variant, p.reason, p.error) == ("reference", "reference", "int8qk-fp16pv",
                                                                    None, None)
    assert p.head_dim == 40 and p.padded_head_dim == 64 and p.quantized
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.backend = "sdpa"
    assert torch.equal(api.run(p), sageattn(q, k, v, backend="reference", variant="int8qk-fp16pv"))


def test_tile_facts_are_asked_once_per_process(monkeypatch):
    from comfy_sage import backends

    impl = backends.get("reference")
    asked = []
    monkeypatch.setattr(type(impl), "tiles", lambda self, cfg, d, dev: asked.append(d) or cfg.tiles)
    monkeypatch.setattr(api, "_tiles_cache", {})
    q, k, v = qkv()
    for _ in range(3):
        plan(q, k, v, backend="reference")
    assert asked == [64]


def test_mask_errors_and_fallback():
    q, k, v = qkv(n=48, nk=40)
    with pytest.raises(ValueError, match=r"attn_mask: backend='reference' does not take masks"):
        sageattn(q, k, v, backend="reference", attn_mask=torch.ones(48, 40, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: last two dims must broadcast to \(Lq=48, Lk=40\)"):
        sageattn(q, k, v, attn_mask=torch.ones(48, 41, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: expected a bool or floating \(additive\) mask"):
        sageattn(q, k, v, attn_mask=torch.ones(48, 40, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"attn_mask: expected 2 to 4 dimensions"):
        sageattn(q, k, v, attn_mask=torch.ones(40, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: leading dims must broadcast to \(B=1, Hq=2\), got shape "
                                         r"\(3, 48, 40\)"):
        sageattn(q, k, v, attn_mask=torch.ones(3, 48, 40, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: leading dims must broadcast"):
        sageattn(q, k, v, attn_mask=torch.ones(2, 2, 48, 40, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: expected device cpu \(q's\), got meta"):
        sageattn(q, k, v, attn_mask=torch.ones(48, 40, dtype=torch.bool, device="meta"))
    mask = torch.rand(48, 40) > 0.3
    mask[:, 0] = True
    p = plan(q, k, v, attn_mask=mask)
    assert p.backend == "sdpa" and p.reason == api.WITH_MASK and p.call.attn_mask is mask
    out = sageattn(q, k, v, attn_mask=mask)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert errors(out, want).rel_l1 < 2e-3  # fp16 output rounding (2^-11) is all that separates them
    additive = torch.randn(1, 2, 48, 40)
    out = sageattn(q, k, v, attn_mask=additive)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=additive)
    assert errors(out, want).rel_l1 < 2e-3


# --- behaviour -------------------------------------------------------------------------------

def test_auto_picks_sdpa_and_says_why():
    p = plan(*qkv())
    assert (p.backend, p.variant) == ("sdpa", "default")
    assert p.reason == "on cpu tensors (auto quantizes only on GPUs where a kernel was measured faster)"


def test_auto_takes_each_rules_variant_unless_one_is_asked_for(monkeypatch):
    # A pretend H200: the decision needs only the capability and a usable backend.
    dispatch.capability.cache_clear()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(api, "_backend_usable", lambda rule: rule.backend == "cuda")
    gpu = types.SimpleNamespace(is_cuda=True, get_device=lambda: 0)
    try:
        rule, why = api.auto_choice(gpu, 128, 32760, 32760, False, None)
        assert why is None and rule.variant == "int8qk-fp8-acc16pv"  # Wan's video shapes
        assert api.auto_choice(gpu, 128, 16384, 16384, False, None)[0].variant == "int8qk-fp8pv"
        assert api.auto_choice(gpu, 128, 32760, 32760, False, "int8qk-fp8-acc16pv")[0] is rule
        # a variant picked by hand keeps the shapes where it was measured faster than SDPA
        picked = api.auto_choice(gpu, 128, 32760, 32760, False, "int8qk-fp8pv")[0]
        assert picked.variant == "int8qk-fp8pv" and picked.min_q_tokens == 8192
        assert api.auto_choice(gpu, 128, 8192, 8192, True, "int8qk-fp8pv")[0].variant == "int8qk-fp8pv"
        rule, why = api.auto_choice(gpu, 128, 32760, 32760, False, "int8qk-fp16pv")
        assert rule is None and why == ("where variant int8qk-fp16pv was not measured faster than SDPA "
                                        "(measured: int8qk-fp8-acc16pv)")
        assert api.auto_choice(gpu, 128, 4096, 4096, False, "int8qk-fp16pv") == (None, dispatch.NO_RULE_CUDA)
    finally:
        dispatch.capability.cache_clear()


def test_auto_plans_the_rules_variant(monkeypatch):
    # plan() under auto on a rule that names the reference backend (runs here): no variant asked for
    # takes the rule's; one asked for is kept (auto_choice then decides whether it runs at all).
    measured = dispatch.Rule(capability=(0, 0), head_dims=(64,), min_q_tokens=1, min_kv_tokens=1, causal=False,
                             backend="reference", variant="int8qk-fp16pv", evidence="")
    asked = []
    monkeypatch.setattr(api, "auto_choice", lambda q, d, nq, nk, c, variant: asked.append(variant) or (measured, None))
    p = plan(*qkv())
    assert (p.backend, p.variant, asked[-1]) == ("reference", "int8qk-fp16pv", None)
    assert p.call.cfg.pv_mode is PVMode.FP16
    p = plan(*qkv(), variant="int8qk-fp8pv")
    assert (p.variant, asked[-1]) == ("int8qk-fp8pv", "int8qk-fp8pv")
    p = plan(*qkv(), pv_mode="fp8")  # a part asked for is a variant asked for
    assert asked[-1] == "int8qk-fp8pv"
    p = plan(*qkv(), qk_granularity="per_warp", smooth_k=False)  # the rule's variant keeps the other options
    assert (p.variant, p.call.cfg.granularity.value, p.call.cfg.smooth_k) == ("int8qk-fp16pv", "per_warp", False)


def test_meta_tensors_are_rejected_by_the_quantized_backends():
    q, k, v = (x.to("meta") for x in qkv())
    with pytest.raises(ValueError, match=r"q: device meta holds no data; backend='reference' runs on cpu\|cuda"):
        sageattn(q, k, v, backend="reference")
    assert sageattn(q, k, v).shape == q.shape  # auto: SDPA computes shapes on meta tensors


@pytest.mark.parametrize("backend", ["reference", "cuda", "triton"])
def test_quantized_backends_refuse_inputs_that_need_gradients(backend):
    q, k, v = qkv()
    q.requires_grad_(True)
    with pytest.raises(ValueError, match=rf"backend='{backend}': q, k or v requires grad, but the quantized "
                                         "kernels have no backward"):
        sageattn(q, k, v, backend=backend)
    with torch.no_grad():
        if backend == "reference":
            sageattn(q, k, v, backend=backend)  # no gradient needed: runs


def test_auto_keeps_sdpa_for_inputs_that_need_gradients():
    q, k, v = qkv(dtype=torch.float32)
    q.requires_grad_(True)
    p = plan(q, k, v)
    assert p.backend == "sdpa" and p.reason == api.NEED_GRAD
    sageattn(q, k, v).sum().backward()
    qd = q.detach().requires_grad_(True)
    F.scaled_dot_product_attention(qd, k, v).sum().backward()
    assert torch.allclose(q.grad, qd.grad)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layouts_dtypes_and_lse(backend, layout, dtype):
    q, k, v = qkv(h=4, hk=2, n=70, nk=77, d=64, dtype=dtype, layout=layout)
    out, lse = sageattn(q, k, v, tensor_layout=layout, is_causal=True, return_lse=True, backend=backend)
    assert out.dtype == dtype and out.shape == q.shape and lse.shape == (1, 4, 70) and lse.dtype == torch.float32
    hnd = (lambda x: x.transpose(1, 2)) if layout == "NHD" else (lambda x: x)
    ref = float32_attention(hnd(q), hnd(k), hnd(v), is_causal=True)
    # bf16/fp16 output rounding plus (reference) the default INT8-QK + FP8-PV quantization.
    assert errors(hnd(out), ref).rel_l1 < (0.04 if backend == "reference" else 0.01)
    s = (hnd(q).float() @ hnd(k).float().repeat_interleave(2, 1).transpose(-1, -2)) / 8
    s = s.masked_fill(torch.ones(70, 77, dtype=torch.bool).triu(1), float("-inf"))
    # INT8 Q·K rounding moves scores by ≲ 0.03 here; SDPA's lse is the exact one.
    assert (lse - torch.logsumexp(s, -1)).abs().max() < (0.05 if backend == "reference" else 1e-3)


@pytest.mark.parametrize("d", [8, 40, 72, 96, 160, 256])
def test_head_dims_are_padded_keeping_the_scale(d):
    q, k, v = qkv(d=d, n=50, nk=60, dtype=torch.bfloat16)
    out = sageattn(q, k, v, backend="reference", qk_quant="none", pv_mode="none")
    assert out.shape == q.shape
    # Unquantized: zero-padded channels change nothing; only the bf16 output rounding remains.
    assert errors(out, float32_attention(q, k, v)).rel_l1 < 5e-3


def test_sm_scale_is_used():
    q, k, v = qkv()
    out = sageattn(q, k, v, sm_scale=0.3, backend="reference", qk_quant="none", pv_mode="none")
    assert errors(out, float32_attention(q, k, v, sm_scale=0.3)).rel_l1 < 2e-3


def test_float32_inputs_computed_in_bf16_warn_once(caplog):
    log.reset()
    q, k, v = qkv(dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="comfy_sage"):
        out = sageattn(q, k, v, backend="reference", qk_quant="none", pv_mode="none")
        sageattn(q, k, v, backend="reference", qk_quant="none", pv_mode="none")
    assert out.dtype == torch.float32
    assert sum("are computed in bfloat16" in r.message for r in caplog.records) == 1
    assert log.counts()["fp32 input"] == 2
    # The bf16 rounding of inputs and output is visible (bf16 has an 8-bit significand).
    err = errors(out, float32_attention(q, k, v)).rel_l1
    assert 1e-4 < err < 1e-2
    # SDPA (auto's fallback) takes float32 as it is: no bf16 rounding there.
    assert errors(sageattn(q, k, v), float32_attention(q, k, v)).rel_l1 < 1e-5


def test_sageattention_package_keyword_alias():
    q, k, v = qkv()
    a = sageattn(q, k, v, backend="reference", qk_quant_gran="per_warp")
    b = sageattn(q, k, v, backend="reference", qk_granularity="per_warp")
    assert torch.equal(a, b)


def test_positional_call_like_sageattention():
    q, k, v = qkv(layout="NHD")
    out = sageattn(q, k, v, "NHD", False, None, False)
    assert out.shape == q.shape


def test_variants_table():
    table = comfy_sage.variants("cpu")
    assert "reference.int8qk-fp8pv" in table and "sdpa.math" in table
    assert not any(name.startswith("sdpa.flash") for name in table)  # a CUDA-only kernel
    q, k, v = qkv()
    for name, fn in table.items():
        out = fn(q, k, v, tensor_layout="HND", is_causal=False)
        assert out.shape == q.shape, name
        assert errors(out, float32_attention(q, k, v)).rel_l1 < 0.25, name  # INT4 is the loosest


def test_available_backends_says_why():
    table = comfy_sage.available_backends()
    assert set(table) == {"cuda", "triton", "reference", "sdpa"}
    assert table["reference"] is None and table["sdpa"] is None
    for reason in table.values():
        assert reason is None or (isinstance(reason, str) and len(reason) > 10)


def test_explicit_reference_matches_reference_module():
    from comfy_sage import reference
    from comfy_sage.backends.base import Call
    from comfy_sage.config import QuantConfig, TensorLayout

    q, k, v = qkv(dtype=torch.bfloat16)
    out = sageattn(q, k, v, backend="reference", variant="int8qk-int8pv", smooth_q=True)
    cfg = QuantConfig(pv_mode="int8", smooth_q=True)
    want = reference.attention(q, k, v, Call(TensorLayout.HND, False, 1 / math.sqrt(64), False, cfg))
    assert torch.equal(out, want)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a host without a visible CUDA device")
def test_variants_for_cuda_on_a_cpu_host_is_an_error():
    with pytest.raises(ValueError, match=r"device: 'cuda' is not available here \(no CUDA device is visible"):
        comfy_sage.variants("cuda")
    with pytest.raises(ValueError, match=r"device: expected a torch.device or a name"):
        comfy_sage.variants("gpu0")


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("variant", ["int8qk-fp8pv", "int8qk-int8pv", "int8qk-fp16pv"])
def test_non_finite_inputs_reach_the_reference_output(variant, where, bad):
    # float32 SDPA's output is non-finite wherever a NaN/Inf reaches it; the reference's must be too
    # (a NaN in K made its "no key seen" rule return zeros for the whole head).
    q, k, v = qkv(n=40, dtype=torch.bfloat16)
    {"q": q, "k": k, "v": v}[where][0, 1, 7, 3] = bad
    want = ~torch.isfinite(F.scaled_dot_product_attention(q.float(), k.float(), v.float()))
    got = ~torch.isfinite(sageattn(q, k, v, backend="reference", variant=variant).float())
    assert want.any() and (got | ~want).all(), (int(want.sum()), int(got.sum()))



def test_the_reference_does_not_import_the_backends():
    """The numerics specification depends on the call description and quantization only."""
    import ast
    from pathlib import Path

    import comfy_sage.reference as ref

    tree = ast.parse(Path(ref.__file__).read_text())
    modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert modules and not any("backends" in m for m in modules), modules
