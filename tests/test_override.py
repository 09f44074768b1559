"""The ComfyUI attention override without ComfyUI: called exactly as the host's ``wrap_attn``
calls it (``fn(func, q, k, v, heads, mask=..., ..., transformer_options=..., _inside_attn_wrapper=True)``),
every layout and keyword combination, every fallback path."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from comfy_sage import api, log
from comfy_sage.comfy import NodeBackend, PatchConfig, SageAttentionOverride, chain, find, install, override as ov
from comfy_sage.comfy.stats import OURS

BF16 = torch.bfloat16


class Host:
    """A stand-in for the host's attention (ComfyUI ``attention_pytorch``): records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        self.calls.append(dict(q=q, k=k, v=v, heads=heads, mask=mask, attn_precision=attn_precision,
                               skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, kwargs=kwargs))
        return reference_attention(q, k, v, heads, mask, skip_reshape, skip_output_reshape,
                                   scale=kwargs.get("scale"))


def reference_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, scale=None,
                        dtype=None):
    if skip_reshape:
        b, _, _, d = q.shape
    else:
        b, _, hd = q.shape
        d = hd // heads
        q = q.view(b, -1, heads, d).transpose(1, 2)
        k = k.view(b, -1, k.shape[-1] // d, d).transpose(1, 2)
        v = v.view(b, -1, v.shape[-1] // d, d).transpose(1, 2)
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    out_dtype = q.dtype
    if dtype is not None:
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).to(out_dtype)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, out.shape[2], -1)


def make(skip_reshape, b=1, heads=4, n_q=96, n_kv=None, d=64, kv_heads=None, dtype=BF16):
    n_kv = n_q if n_kv is None else n_kv
    kv_heads = heads if kv_heads is None else kv_heads
    if skip_reshape:
        shapes = (b, heads, n_q, d), (b, kv_heads, n_kv, d)
    else:
        shapes = (b, n_q, heads * d), (b, n_kv, kv_heads * d)
    q = torch.randn(shapes[0]).to(dtype)
    k = torch.randn(shapes[1]).to(dtype)
    v = torch.randn(shapes[1]).to(dtype)
    return q, k, v


def rel_l1(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().sum() / b.abs().sum()).item()


def host_call(fn, func, q, k, v, heads, *, heads_as_keyword=False, topts=None, **kw):
    """Call ``fn`` the way ComfyUI's wrap_attn does (it adds ``_inside_attn_wrapper``)."""
    kw.setdefault("transformer_options", {} if topts is None else topts)
    kw["_inside_attn_wrapper"] = True
    if heads_as_keyword:
        return fn(func, q, k, v, heads=heads, **kw)
    return fn(func, q, k, v, heads, **kw)


@pytest.fixture(autouse=True)
def _fresh_log():
    log.reset()
    yield
    log.reset()


def patched(**config):
    config.setdefault("backend", "reference")
    return SageAttentionOverride(PatchConfig(**config))


# -- ours: layouts and keywords ----------------------------------------------------------------
@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
@pytest.mark.parametrize("heads_as_keyword", [False, True])
@pytest.mark.parametrize("n_kv", [96, 40])  # self-attention and cross-attention to shorter text
def test_ours_matches_host_layouts(skip_reshape, skip_output_reshape, heads_as_keyword, n_kv):
    fn, host = patched(), Host()
    q, k, v = make(skip_reshape, n_kv=n_kv)
    out = host_call(fn, host, q, k, v, 4, heads_as_keyword=heads_as_keyword, skip_reshape=skip_reshape,
                    skip_output_reshape=skip_output_reshape)
    expected = reference_attention(q, k, v, 4, None, skip_reshape, skip_output_reshape, dtype=torch.float32)
    assert host.calls == []
    assert out.shape == expected.shape and out.dtype == q.dtype
    # Gaussian inputs, INT8 Q·K + FP8 P·V: SageAttention2 measures rel-L1 ≈ 0.04 against float32.
    assert rel_l1(out, expected) < 0.08
    assert fn.stats.total.ours == 1 and fn.stats.total.backends == {"reference": 1}


def test_attn_precision_fp32_is_not_a_fallback():
    fn, host = patched(), Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4, attn_precision=torch.float32)
    assert host.calls == [] and fn.stats.total.ours == 1


def test_scale_keyword_is_used():
    fn, host = patched(), Host()
    q, k, v = make(True)
    out = host_call(fn, host, q, k, v, 4, skip_reshape=True, skip_output_reshape=True, scale=0.05)
    expected = reference_attention(q, k, v, 4, None, True, True, scale=0.05, dtype=torch.float32)
    default = reference_attention(q, k, v, 4, None, True, True, dtype=torch.float32)
    assert rel_l1(out, expected) < 0.08 < rel_l1(out, default)


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_gqa_passes_through(skip_reshape):
    fn, host = patched(), Host()
    q, k, v = make(skip_reshape, heads=4, kv_heads=2)
    out = host_call(fn, host, q, k, v, 4, skip_reshape=skip_reshape, skip_output_reshape=skip_reshape,
                    enable_gqa=True)
    expected = reference_attention(q, k, v, 4, None, skip_reshape, skip_output_reshape=skip_reshape,
                                   dtype=torch.float32)
    assert host.calls == [] and rel_l1(out, expected) < 0.08


@pytest.mark.parametrize("variant", ["int8qk-fp16pv", "int8qk-int8pv", "int8qk-fp8-acc16pv"])
@pytest.mark.parametrize("granularity", ["per_block", "per_warp", "per_thread"])
def test_variants_and_granularities(variant, granularity):
    fn, host = patched(variant=variant, qk_granularity=granularity, smooth_q=True), Host()
    q, k, v = make(False)
    out = host_call(fn, host, q, k, v, 4)
    expected = reference_attention(q, k, v, 4, dtype=torch.float32)
    assert host.calls == [] and rel_l1(out, expected) < 0.08


def test_fp16_inputs():
    fn, host = patched(), Host()
    q, k, v = make(False, dtype=torch.float16)
    out = host_call(fn, host, q, k, v, 4)
    assert out.dtype == torch.float16 and host.calls == []


# -- fallbacks -----------------------------------------------------------------------------------
def assert_fell_back(fn, host, reason, out, q, heads=4, **expect):
    assert len(host.calls) == 1, "the host's attention must run exactly once"
    call = host.calls[0]
    assert call["q"] is q and call["heads"] == heads
    assert call["kwargs"]["_inside_attn_wrapper"] is True, "host flag must reach func (no re-entry)"
    for key, value in expect.items():
        assert call[key] is value or call[key] == value
    assert fn.stats.total.ours == 0 and fn.stats.total.fallback[reason] == 1
    assert out is not None


def test_fallback_mask():
    fn, host = patched(), Host()
    q, k, v = make(False, n_kv=40)
    mask = torch.zeros(96, 40)
    out = host_call(fn, host, q, k, v, 4, mask=mask)
    assert_fell_back(fn, host, ov.MASK, out, q, mask=mask)


def test_fallback_low_precision_attention_false():
    fn, host = patched(), Host()
    q, k, v = make(True)
    out = host_call(fn, host, q, k, v, 4, skip_reshape=True, low_precision_attention=False)
    assert_fell_back(fn, host, ov.LOW_PRECISION_OFF, out, q, skip_reshape=True)
    assert host.calls[0]["kwargs"]["low_precision_attention"] is False


def test_low_precision_attention_true_runs_ours():
    fn, host = patched(), Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4, low_precision_attention=True)
    assert host.calls == [] and fn.stats.total.ours == 1


def test_fallback_fp32():
    fn, host = patched(), Host()
    q, k, v = make(False, dtype=torch.float32)
    out = host_call(fn, host, q, k, v, 4)
    assert_fell_back(fn, host, ov.FP32, out, q)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8])
def test_fallback_other_dtypes(dtype):
    fn = patched()
    q, k, v = make(False, dtype=torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    assert fn.attend(lambda *a, **kw: "host", q, k, v, 4) == "host"
    assert fn.stats.total.fallback[ov.BAD_DTYPE] == 1


def test_fallback_mixed_dtypes():
    fn = patched()
    q, k, v = make(False)
    v = v.half()
    assert fn(lambda *a, **kw: "host", q, k, v, 4) == "host"
    assert fn.stats.total.fallback[ov.BAD_DTYPE] == 1


def test_fallback_unsupported_head_dim():
    fn, host = patched(), Host()
    q, k, v = make(True, heads=1, d=320, n_q=16)  # over the largest head dim the API takes
    out = host_call(fn, host, q, k, v, 1, skip_reshape=True)
    assert len(host.calls) == 1 and out.shape == (1, 16, 320)
    assert fn.stats.total.fallback == {ov.BAD_HEAD_DIM: 1}


def test_fallback_heads_do_not_divide():
    fn = patched()
    q, k, v = make(False, heads=4, d=16)
    assert fn(lambda *a, **kw: "host", q, k, v, 5) == "host"
    assert fn.stats.total.fallback[ov.BAD_SHAPE] == 1


def test_fallback_int32_offsets(monkeypatch):
    # A real ≥2³¹-element tensor needs 4 GiB: lower the limit instead and check the guard's logic.
    monkeypatch.setattr(ov, "_INT32_LIMIT", 96 * 256 - 1)  # q (1, 96, 4*64): max offset 96*256-1
    fn, host = patched(), Host()
    q, k, v = make(False)
    out = host_call(fn, host, q, k, v, 4)
    assert_fell_back(fn, host, ov.INT32_OFFSETS, out, q)


def test_max_offset_counts_strides():
    base = torch.empty(4, 8)
    assert ov._max_offset(base) == 31
    assert ov._max_offset(base.t()) == 31
    assert ov._max_offset(base[:, ::2]) == 3 * 8 + 3 * 2
    assert ov._max_offset(torch.empty(1, 1).expand(1000, 1000)) == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_guard(bad, caplog):
    fn, host = patched(nan_guard=True), Host()
    q, k, v = make(False)
    k[0, 3, 5] = bad
    with caplog.at_level(logging.WARNING, logger="comfy_sage"):
        host_call(fn, host, q, k, v, 4)
        host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.fallback[ov.NON_FINITE] == 2
    assert sum("NaN/Inf guard" in r.getMessage() for r in caplog.records) == 1


def test_nan_guard_on_runs_ours_on_finite_inputs():
    fn, host = patched(nan_guard=True), Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4)
    assert host.calls == [] and fn.stats.total.ours == 1


def test_fallback_host_uses_sage():
    fn, host = patched(host_uses_sage=True), Host()
    q, k, v = make(False)
    out = host_call(fn, host, q, k, v, 4)
    assert_fell_back(fn, host, ov.HOST_SAGE, out, q)


def test_schedule_window():
    fn, host = patched(sigma_start=0.8, sigma_end=0.2), Host()
    q, k, v = make(False)
    for sigma, expect_ours in [(1.0, False), (0.8, True), (0.5, True), (0.2, True), (0.1, False)]:
        before = fn.stats.total.ours
        host_call(fn, host, q, k, v, 4, topts={"sigmas": torch.tensor([sigma, sigma])})
        assert (fn.stats.total.ours - before == 1) is expect_ours, sigma
    assert fn.stats.total.fallback[ov.OUTSIDE_WINDOW] == 2
    # no sigma (a call outside sampling): counts as inside
    host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.ours == 4


def test_schedule_window_sigma_is_read_once_per_tensor():
    fn = patched(sigma_start=0.8, sigma_end=0.2)
    q, k, v = make(False)
    sigmas = torch.tensor([0.5])
    host_call(fn, Host(), q, k, v, 4, topts={"sigmas": sigmas})
    sigmas.fill_(0.9)  # same object: the cached decision stands (the host sets a new tensor per step)
    host_call(fn, Host(), q, k, v, 4, topts={"sigmas": sigmas})
    assert fn.stats.total.ours == 2


@pytest.mark.parametrize(
    "first,last,last_type,block_type,index,total,expect_full",
    [
        (2, 0, None, "double", 0, 10, True),
        (2, 0, None, "double", 2, 10, False),
        (0, 2, None, "double", 8, 10, True),
        (0, 2, None, "double", 7, 10, False),
        (2, 2, "single", "double", 9, 10, False),  # Flux: last N counts in the single stage
        (2, 2, "single", "single", 1, 20, False),  # ... and first N in the double stage
        (2, 2, "single", "single", 19, 20, True),
        (2, 2, "single", "double", 1, 10, True),
        (1, 1, None, None, None, None, False),  # UNet-style: no block report, rule does not apply
    ],
)
def test_full_precision_blocks(first, last, last_type, block_type, index, total, expect_full):
    fn, host = patched(full_precision_first=first, full_precision_last=last, last_stage_type=last_type), Host()
    q, k, v = make(False)
    topts = {"block_type": block_type, "block_index": index, "total_blocks": total}
    topts = {key: value for key, value in topts.items() if value is not None}
    host_call(fn, host, q, k, v, 4, topts=topts)
    assert (len(host.calls) == 1) is expect_full
    assert fn.stats.total.fallback[ov.FULL_PRECISION_BLOCK] == int(expect_full)


def test_exact_kv_lengths_only_for_cross_attention():
    fn, host = patched(exact_kv_lengths={257}), Host()
    q, k, v = make(False, n_kv=257)
    out = host_call(fn, host, q, k, v, 4)
    assert_fell_back(fn, host, ov.EXACT_KV, out, q)
    q, k, v = make(False, n_q=257)  # self-attention of the same length runs ours
    host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.ours == 1


def test_auto_on_cpu_means_the_host_attention(caplog):
    fn, host = SageAttentionOverride(PatchConfig(backend="auto")), Host()
    q, k, v = make(False)
    with caplog.at_level(logging.INFO, logger="comfy_sage"):
        out = host_call(fn, host, q, k, v, 4)
        host_call(fn, host, q, k, v, 4)
    (reason,) = fn.stats.total.fallback
    assert len(host.calls) == 2 and fn.stats.total.fallback[reason] == 2 and fn.stats.total.backends == {}
    assert out.shape == q.shape
    lines = [r.getMessage() for r in caplog.records if "ComfyUI's attention" in r.getMessage()]
    assert lines == [f"comfy_sage: ComfyUI's attention for calls {reason} (logged once; later occurrences are "
                     "counted)"]
    assert reason.startswith("on cpu tensors")

def test_auto_asks_for_the_nodes_variant_or_none(monkeypatch):
    # variant auto on the node: None reaches the decision (each rule's measured variant); a variant
    # picked on the node reaches it as picked.
    asked = []
    monkeypatch.setattr(api, "auto_choice", lambda q, d, nq, nk, c, variant: asked.append(variant) or (None, "r"))
    q, k, v = make(False)
    for variant in (None, "int8qk-fp16pv"):
        fn, host = SageAttentionOverride(PatchConfig(backend="auto", variant=variant)), Host()
        host_call(fn, host, q, k, v, 4)
        assert len(host.calls) == 1 and fn.stats.total.fallback == {"r": 1}
    assert asked == [None, "int8qk-fp16pv"]


def test_forced_unavailable_backend_falls_back():
    from comfy_sage import available_backends

    if available_backends().get("cuda") is None:
        pytest.skip("the cuda backend is available here")
    fn, host = SageAttentionOverride(PatchConfig(backend="cuda")), Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4)
    assert len(host.calls) == 1
    (reason,) = fn.stats.total.fallback
    assert reason.startswith("while the cuda backend is unavailable")


def test_fallback_logged_once_per_reason(caplog):
    fn, host = patched(), Host()
    q, k, v = make(False)
    with caplog.at_level(logging.INFO, logger="comfy_sage"):
        for _ in range(5):
            host_call(fn, host, q, k, v, 4, mask=torch.zeros(96, 96))
            host_call(fn, host, q, k, v, 4, low_precision_attention=False)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(ov.MASK in m for m in messages) == 1
    assert sum(ov.LOW_PRECISION_OFF in m for m in messages) == 1
    assert fn.stats.total.fallback == {ov.MASK: 5, ov.LOW_PRECISION_OFF: 5}  # counted per call in the statistics


# -- chaining, install, copies, statistics ---------------------------------------------------------
def test_chaining_runs_previous_with_ours_as_func():
    seen = []

    def previous(func, q, k, v, heads, **kwargs):
        seen.append(func)
        return func(q * 1.0, k, v, heads, **kwargs)  # e.g. a node that edits q before attention

    topts = {"optimized_attention_override": previous}
    fn = install(topts, PatchConfig(backend="reference"))
    assert topts["optimized_attention_override"] is fn and fn.previous is previous
    host = Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4)
    assert len(seen) == 1 and host.calls == [] and fn.stats.total.ours == 1
    # a fallback still reaches the host through the previous override
    host_call(fn, host, q, k, v, 4, mask=torch.zeros(96, 96))
    assert len(seen) == 2 and len(host.calls) == 1


def test_install_twice_replaces_ours_and_keeps_the_chain():
    def previous(func, *args, **kwargs):
        return func(*args, **kwargs)

    topts = {"optimized_attention_override": previous}
    first = install(topts, PatchConfig(backend="reference", smooth_q=True))
    second = install(topts, PatchConfig(backend="reference"))
    assert second.previous is previous and first is not second
    assert find(topts) is second and find({}) is None
    assert chain(None, PatchConfig()).previous is None


def test_deepcopy_shares_the_override():
    fn = patched()
    options = {"transformer_options": {"optimized_attention_override": fn}}
    assert copy.deepcopy(options)["transformer_options"]["optimized_attention_override"] is fn
    assert copy.copy(fn) is fn


def test_stats_by_shape_and_runs():
    fn, host = patched(), Host()
    run1, run2 = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([1.0, 0.0])
    q, k, v = make(False)
    qc, kc, vc = make(False, n_kv=40)
    host_call(fn, host, q, k, v, 4, topts={"sample_sigmas": run1})
    host_call(fn, host, qc, kc, vc, 4, topts={"sample_sigmas": run1})
    host_call(fn, host, q, k, v, 4, topts={"sample_sigmas": run1}, mask=torch.zeros(96, 96))
    host_call(fn, host, q, k, v, 4, topts={"sample_sigmas": run2})
    snap = fn.stats.snapshot()
    assert snap["runs"] == 2
    assert snap["total"]["calls"] == 4 and snap["total"]["ours"] == 3
    assert snap["last_run"]["calls"] == 3 and snap["last_run"]["fallback"] == {ov.MASK: 1}
    assert snap["run"]["calls"] == 1
    shapes = {(s["q_tokens"], s["kv_tokens"]): s for s in snap["total"]["by_shape"]}
    assert shapes[(96, 96)][OURS] == 2 and shapes[(96, 96)][ov.MASK] == 1 and shapes[(96, 40)][OURS] == 1
    assert shapes[(96, 96)]["heads"] == 4 and shapes[(96, 96)]["head_dim"] == 64
    fn.stats.reset()
    assert fn.stats.snapshot()["total"]["calls"] == 0


def test_timing_is_recorded_when_asked():
    fn, host = patched(timing=True), Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.timed_calls == 1 and fn.stats.total.attention_s > 0


def test_allow_compile_false_wraps_in_a_compile_boundary():
    fn = patched(allow_compile=False)
    host = Host()
    q, k, v = make(False)
    host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.ours == 1
    from comfy_sage import api

    assert fn._run is not api.run and patched()._run is api.run


# -- config ------------------------------------------------------------------------------------------
def test_config_from_widgets_and_validation():
    cfg = PatchConfig.from_widgets("auto", "auto", "auto")
    assert cfg.backend is NodeBackend.AUTO and cfg.variant is None and cfg.qk_granularity is None
    cfg = PatchConfig.from_widgets("reference", "int8qk-fp16pv", "per_warp", exact_kv_lengths=[257])
    assert cfg.variant == "int8qk-fp16pv" and cfg.qk_granularity.value == "per_warp"
    assert cfg.describe()["exact_kv_lengths"] == [257]
    with pytest.raises(ValueError, match="backend"):
        PatchConfig(backend="fast")
    with pytest.raises(ValueError, match="variant"):
        PatchConfig(variant="int9")
    with pytest.raises(ValueError, match="qk_granularity"):
        PatchConfig(qk_granularity="per_token")
    with pytest.raises(ValueError, match="sigma_end"):
        PatchConfig(sigma_start=0.2, sigma_end=0.5)
    with pytest.raises(ValueError, match="full_precision_first"):
        PatchConfig(full_precision_first=-1)


def test_importing_the_adapter_imports_no_comfyui():
    import subprocess
    import sys

    code = "import sys, comfy_sage.comfy; assert not any(m == 'comfy' or m.startswith('comfy.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pack_entry_point_never_raises_on_an_old_host():
    """The repository's __init__.py on a host without comfy_api (old ComfyUI): loads, exports empty
    mappings and WEB_DIRECTORY, logs what is missing."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, types, importlib.util, logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "sys.modules['comfy'] = types.ModuleType('comfy')\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(root / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(root)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "assert m.NODE_CLASS_MAPPINGS == {} and m.WEB_DIRECTORY == './web'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nodes not loaded" in done.stderr and "comfy_api" in done.stderr


# -- reliability (issue 9) -------------------------------------------------------------------------
@pytest.mark.parametrize("topts,reason", [
    ({"sigmas": torch.tensor([])}, ov.BAD_SIGMAS),
    ({"sigmas": []}, ov.BAD_SIGMAS),
    ({"sigmas": "abc"}, ov.BAD_SIGMAS),
    ({"sigmas": torch.tensor([float("nan")])}, ov.BAD_SIGMAS),
    ("not a dict", ov.BAD_OPTIONS),
    (["sigmas"], ov.BAD_OPTIONS),
])
def test_odd_host_input_falls_back(topts, reason):
    fn, host = patched(sigma_start=0.8, sigma_end=0.2), Host()
    q, k, v = make(False)
    out = host_call(fn, host, q, k, v, 4, topts=topts)
    assert_fell_back(fn, host, reason, out, q)


def test_a_scale_that_is_not_a_number_falls_back():
    fn, host = patched(), Host()
    q, k, v = make(True)
    calls = []
    out = fn(lambda *a, **kw: calls.append(kw["scale"]) or "host", q, k, v, 4, skip_reshape=True, scale="abc",
             transformer_options={})
    assert out == "host" and calls == ["abc"]
    assert fn.stats.total.fallback == {f"{ov.REJECTED} (sm_scale)": 1}


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_training_keeps_the_host_attention(backend, caplog):
    fn, host = SageAttentionOverride(PatchConfig(backend=backend)), Host()
    q, k, v = make(False)
    q.requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="comfy_sage"):
        out = host_call(fn, host, q, k, v, 4)
        out.float().sum().backward()
        host_call(fn, host, q, k, v, 4)
    assert q.grad is not None and fn.stats.total.fallback == {ov.NEED_GRAD: 2}
    assert sum(ov.NEED_GRAD in r.getMessage() for r in caplog.records) == 1
    with torch.no_grad():  # inference with weights that require grad: ours again
        host_call(fn, host, q, k, v, 4)
    assert fn.stats.total.ours == int(backend == "reference")


def test_fallback_reasons_hold_no_shapes():
    fn = patched()
    for n, d in [(16, 320), (24, 288), (40, 300)]:  # three shapes over the largest head dim
        q, k, v = make(True, heads=1, d=d, n_q=n)
        fn(lambda *a, **kw: "host", q, k, v, 1, skip_reshape=True, transformer_options={})
    assert fn.stats.total.fallback == {ov.BAD_HEAD_DIM: 3}  # one bucket; the shapes are in by_shape
    assert len(fn.stats.total.by_shape) == 3


def test_an_unavailable_chosen_backend_warns_once_per_prompt(caplog, monkeypatch):
    from comfy_sage import backends

    monkeypatch.setitem(backends._why_not, "triton", "pretend: not installed")
    fn = SageAttentionOverride(PatchConfig(backend="triton"))
    q, k, v = make(False)
    with caplog.at_level(logging.INFO, logger="comfy_sage"):
        for run in (torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.5, 0.0])):  # two prompts, three calls each
            for _ in range(3):
                host_call(fn, Host(), q, k, v, 4, topts={"sample_sigmas": run})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert all("while the triton backend is unavailable (pretend: not installed)" in r.getMessage()
               and "backend=triton was chosen in the node" in r.getMessage() for r in warnings)
    assert fn.stats.total.ours == 0 and fn.stats.total.calls == 6


def test_fallback_log_lines_read_as_sentences(caplog):
    fn, host = patched(), Host()
    q, k, v = make(False)
    with caplog.at_level(logging.INFO, logger="comfy_sage"):
        host_call(fn, host, q, k, v, 4, mask=torch.zeros(96, 96))
    assert [r.getMessage() for r in caplog.records] == [
        "comfy_sage: ComfyUI's attention for calls with masks (logged once; later occurrences are counted)"]


def test_statistics_and_once_logging_are_thread_safe(caplog):
    import threading

    fn, host = patched(), Host()
    q, k, v = make(False, n_q=8)
    mask = torch.zeros(8, 8)
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(50):
            host_call(fn, host, q, k, v, 4, mask=mask)

    with caplog.at_level(logging.INFO, logger="comfy_sage"):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert fn.stats.total.fallback == {ov.MASK: 400} and fn.stats.total.calls == 400
    assert sum(ov.MASK in r.getMessage() for r in caplog.records) == 1
    assert log.counts()[f"comfy.fallback: {ov.MASK}"] == 1


def test_an_import_error_inside_the_pack_is_not_blamed_on_the_host(tmp_path):
    """A broken import inside comfy-sage must not read "this ComfyUI is too old"."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pack = tmp_path / "pack"
    pack.mkdir()
    shutil.copy(root / "__init__.py", pack / "__init__.py")
    # nodes.py whose own import fails on a module of the pack, on a host that has comfy_api
    (pack / "nodes.py").write_text("import comfy_api.latest\nfrom comfy_sage.not_a_module import x\n")
    host = tmp_path / "host" / "comfy_api"
    host.mkdir(parents=True)
    (host / "__init__.py").write_text("")
    (host / "latest.py").write_text("")
    code = (
        "import sys, types, importlib.util, logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"sys.path.insert(0, {str(tmp_path / 'host')!r}); sys.path.insert(0, {str(root)!r})\n"
        "sys.modules['comfy'] = types.ModuleType('comfy')\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(pack / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(pack)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "assert m.NODE_CLASS_MAPPINGS == {}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "importing them failed" in done.stderr and "comfy_sage.not_a_module" in done.stderr
    assert "too old" not in done.stderr
