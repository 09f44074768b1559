"""The Sage Attention node inside a real ComfyUI: tiny random-weight models of each family,
loaded through the host, sampled a few steps on the CPU with and without the node
(``backend=reference``: the quantization is emulated exactly, so the CPU exercises it)."""

from __future__ import annotations

import pytest
import torch

import tiny_models as tm
from comfy_sage.comfy import find, override as ov
from comfy_sage.comfy.stats import OURS

NODE_DEFAULTS = dict(backend="reference", variant="auto", qk_granularity="auto", smooth_k=True, smooth_q=False,
                     start_percent=0.0, end_percent=1.0, full_precision_first_blocks=0,
                     full_precision_last_blocks=0, allow_compile=True, nan_guard=False)

# Fallbacks each family makes by design (everything else must run ours):
EXPECTED_FALLBACKS = {
    "wan21_t2v": set(),
    "wan21_i2v": {ov.EXACT_KV},  # CLIP-vision image cross-attention (NaN-prone when quantized)
    "hunyuan_video": set(),  # with a text padding mask every call falls back: see test_masked_calls_*
    "flux": set(),
    "sdxl_unet": set(),
}

# Bound on the relative L1 difference of the sampled latent, patched vs unpatched.
# Per call, the reference INT8-Q·K/FP8-P·V attention differs from exact attention by rel-L1
# ≲ 0.04 on Gaussian inputs (SageAttention2's published accuracy; test_override asserts 0.08).
# That error enters the latent only through the attention branch of each residual block,
# which is a fraction of each block's update, and a sampler step moves the latent by a
# convex combination of the model output and the current latent: the final latent's relative
# difference stays below the per-call attention error. We use the per-call bound, 0.08, with
# bf16 noise of both runs (≈ 2⁻⁸ each) well inside it.
LATENT_REL_L1_BOUND = 0.08


def rel_l1(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().sum() / b.abs().sum()).item()


@pytest.fixture(scope="module")
def model_files(host, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_models")
    return {name: tm.write(host, spec, folder) for name, spec in tm.SPECS.items()}


def apply_node(host, patcher, **inputs):
    values = dict(NODE_DEFAULTS, **inputs)
    return host.node.execute(model=patcher, **values).result[0]


def run(host, patcher, spec, monkeypatch, **sample_kw):
    counter = tm.AttentionCounter(monkeypatch, spec.attention_modules)
    out = tm.sample(host, patcher, spec, **sample_kw)
    monkeypatch.undo()
    return out, counter.calls


@pytest.mark.parametrize("name", list(tm.SPECS))
def test_node_patches_every_diffusion_attention_call(host, bf16_on_cpu, model_files, monkeypatch, name):
    spec = tm.SPECS[name]
    patcher = tm.load(host, spec, model_files[name])
    base, base_calls = run(host, patcher, spec, monkeypatch)
    host.mm.should_use_bf16 = lambda *a, **kw: True  # undone by run(); the fixture's patch again

    patched = apply_node(host, patcher)
    assert patched is not patcher
    assert "optimized_attention_override" not in patcher.model_options.get("transformer_options", {})
    fn = find(patched.model_options["transformer_options"])
    out, calls = run(host, patched, spec, monkeypatch)
    stats = fn.stats.snapshot()["total"]

    assert len(calls) == len(base_calls) > 0
    assert stats["calls"] == len(calls), "every attention call of the diffusion model reaches the override"
    assert set(stats["fallback"]) == EXPECTED_FALLBACKS[name], stats["fallback"]
    assert stats["ours"] > 0 and stats["backends"] == {"reference": stats["ours"]}
    diff = rel_l1(out, base)
    print(f"{name}: {stats['calls']} calls, {stats['ours']} ours, fallback {stats['fallback']}, latent rel-L1 {diff:.4f}")
    assert 0 < diff < LATENT_REL_L1_BOUND, diff
    assert torch.isfinite(out).all()

    # the input model is untouched: sampling it again reproduces the unpatched run bit for bit
    again, _ = run(host, patcher, spec, monkeypatch)
    assert torch.equal(again, base)


# -- behaviour on one model (Wan 2.1 t2v unless the case needs another) -----------------------------
@pytest.fixture
def wan(host, bf16_on_cpu, model_files):
    spec = tm.SPECS["wan21_t2v"]
    return spec, tm.load(host, spec, model_files["wan21_t2v"])


def stats_of(patched):
    return find(patched.model_options["transformer_options"]).stats.snapshot()["total"]


def test_low_precision_attention_false_is_not_quantized(host, wan, monkeypatch):
    """Newer hosts flag precision-critical calls with low_precision_attention=False (0.8.0 does not
    yet): emulate that host on the cross-attention calls and check they keep the host attention."""
    spec, patcher = wan
    import comfy.ldm.wan.model as wan_model

    original = wan_model.optimized_attention
    flagged = []

    def newer_host(q, k, v, *args, **kwargs):
        if k.shape[1] != q.shape[1]:  # cross-attention to the text
            kwargs["low_precision_attention"] = False
            flagged.append(1)
        return original(q, k, v, *args, **kwargs)

    patched = apply_node(host, patcher)
    monkeypatch.setattr(wan_model, "optimized_attention", newer_host)
    tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert flagged and stats["fallback"] == {ov.LOW_PRECISION_OFF: len(flagged)}
    assert stats["ours"] == stats["calls"] - len(flagged) > 0
    cross = [s for s in stats["by_shape"] if s["q_tokens"] != s["kv_tokens"]]
    assert cross and all(OURS not in s for s in cross)


def test_chaining_with_another_override(host, wan):
    spec, patcher = wan
    seen = []

    def other_node_override(func, *args, **kwargs):  # e.g. a node that records attention calls
        seen.append(func)
        return func(*args, **kwargs)

    other = patcher.clone()
    other.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_node_override
    patched = apply_node(host, other)
    tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert len(seen) == stats["calls"] == stats["ours"] > 0, "both overrides ran on every call"
    assert other.model_options["transformer_options"]["optimized_attention_override"] is other_node_override
    # applying the node twice keeps one of ours (the later settings) over the other override
    twice = apply_node(host, patched, smooth_q=True)
    fn = find(twice.model_options["transformer_options"])
    assert fn.previous is other_node_override and fn.config.smooth_q


def test_outside_the_schedule_window_host_attention_runs(host, wan, monkeypatch):
    spec, patcher = wan
    patched = apply_node(host, patcher, start_percent=0.5, end_percent=1.0)
    counter = tm.AttentionCounter(monkeypatch, spec.attention_modules)
    tm.sample(host, patched, spec, steps=4)
    stats = stats_of(patched)
    per_step = len(counter.calls) // 4
    # flow sigmas 1.0 → 0: with shift 8 most of the first steps lie above percent 0.5's sigma
    assert stats["fallback"].get(ov.OUTSIDE_WINDOW, 0) % per_step == 0
    assert 0 < stats["fallback"][ov.OUTSIDE_WINDOW] < stats["calls"] and stats["ours"] > 0
    full = apply_node(host, patcher, start_percent=1.0, end_percent=1.0)  # a window of no sampled step
    tm.sample(host, full, spec, steps=4)
    assert stats_of(full)["ours"] == 0


def test_full_precision_blocks(host, wan):
    spec, patcher = wan  # 2 blocks, 2 attention calls each per forward
    patched = apply_node(host, patcher, full_precision_first_blocks=1)
    tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert stats["fallback"] == {ov.FULL_PRECISION_BLOCK: stats["calls"] // 2} and stats["ours"] == stats["calls"] // 2


def test_flux_keeps_last_single_block_exact(host, bf16_on_cpu, model_files):
    spec = tm.SPECS["flux"]  # 1 double block then 2 single blocks: 3 calls per forward
    patched = apply_node(host, tm.load(host, spec, model_files["flux"]), full_precision_last_blocks=1)
    tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert stats["fallback"] == {ov.FULL_PRECISION_BLOCK: stats["calls"] // 3}


def test_masked_calls_keep_host_attention(host, bf16_on_cpu, model_files, monkeypatch):
    spec = tm.SPECS["hunyuan_video"]
    mask = torch.tensor([[1] * 10 + [0] * 2])  # text padding, as the host's text encoder gives
    masked = tm.Spec(**{**spec.__dict__, "extra_cond": lambda: {**spec.extra_cond(), "attention_mask": mask}})
    patcher = tm.load(host, masked, model_files["hunyuan_video"])
    base = tm.sample(host, patcher, masked)
    patched = apply_node(host, patcher)
    out = tm.sample(host, patched, masked)
    stats = stats_of(patched)
    assert stats["ours"] == 0 and stats["fallback"] == {ov.MASK: stats["calls"]}
    assert torch.equal(out, base)


def test_float32_model_keeps_host_attention(host, model_files):
    spec = tm.SPECS["wan21_t2v"]
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(str(model_files["wan21_t2v"]), model_options={"dtype": torch.float32})
    base = tm.sample(host, patcher, spec)
    patched = apply_node(host, patcher)
    out = tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert stats["fallback"] == {ov.FP32: stats["calls"]} and torch.equal(out, base)


def test_use_sage_attention_host_is_not_patched_twice(host, wan, monkeypatch):
    spec, patcher = wan
    monkeypatch.setattr(host.mm, "sage_attention_enabled", lambda: True)
    patched = apply_node(host, patcher)
    base = tm.sample(host, patcher, spec)
    out = tm.sample(host, patched, spec)
    stats = stats_of(patched)
    assert stats["fallback"] == {ov.HOST_SAGE: stats["calls"]} and torch.equal(out, base)


def test_backend_off_passes_the_model_through(host, wan):
    _, patcher = wan
    assert apply_node(host, patcher, backend="off") is patcher


def test_the_host_validates_every_input(host):
    """A validate_inputs that names an input or takes **kwargs turns off ComfyUI's min/max/option
    checks for it (execution.py validate_inputs): the node must have none."""
    from comfy_api.latest import io

    assert getattr(host.node, "validate_inputs").__func__ is io.ComfyNode.validate_inputs.__func__


def test_start_after_end_is_one_error(host, wan):
    _, patcher = wan
    with pytest.raises(ValueError, match=r"start_percent \(0.6\) must not exceed end_percent \(0.4\)"):
        apply_node(host, patcher, start_percent=0.6, end_percent=0.4)


@pytest.mark.parametrize("inputs,message", [
    (dict(start_percent=0.5, end_percent=0.5), "start_percent = end_percent (0.5) quantizes no sampling step"),
    (dict(full_precision_first_blocks=1, full_precision_last_blocks=200), "covers all"),
])
def test_settings_that_disable_the_node_warn(host, wan, caplog, inputs, message):
    import logging

    _, patcher = wan
    with caplog.at_level(logging.WARNING, logger="comfy_sage"):
        apply_node(host, patcher, **inputs)
    assert sum(message in r.getMessage() for r in caplog.records) == 1, caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfy_sage"):
        apply_node(host, patcher)
    assert not caplog.records


def test_schema_tooltips_and_defaults(host):
    from comfy_sage.comfy import NODE_VARIANTS

    schema = host.node.GET_SCHEMA()
    by_id = {item.id: item for item in schema.inputs}
    assert by_id["variant"].options == ["auto", *NODE_VARIANTS]
    # every offered variant is explained, and "auto" says what it means
    for name in by_id["variant"].options:
        assert name in by_id["variant"].tooltip
    assert "auto: with backend auto, the variant measured fastest" in by_id["variant"].tooltip
    assert "with a forced backend, its default (int8qk-fp8pv)" in by_id["variant"].tooltip
    assert "auto: the backend's default (per_thread)" in by_id["qk_granularity"].tooltip
    assert "(default)" not in by_id["qk_granularity"].tooltip.replace("auto: the backend's default", "")
    assert "CPU included" in by_id["backend"].tooltip
    assert (schema.node_id, schema.display_name, schema.category) == ("SageAttention", "Sage Attention", "sage")
    for item in schema.inputs + schema.outputs:
        assert item.tooltip, f"{getattr(item, 'id', item)} has no tooltip"
        options = getattr(item, "options", None)
        if options:
            assert item.default in options


def test_text_encoder_and_vae_attention_never_reach_the_override(host, wan):
    """The override lives in the diffusion model's options only: the host's CLIP text encoder
    and VAE attention (no transformer_options) run their own attention even while it is set."""
    import comfy.clip_model
    import comfy.ldm.modules.attention as attention
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.model import AttnBlock

    spec, patcher = wan
    dispatch_before = attention.optimized_attention
    patched = apply_node(host, patcher)
    tm.sample(host, patched, spec)
    calls_after_sampling = stats_of(patched)["calls"]
    assert attention.optimized_attention is dispatch_before, "no global patching"

    encoder = comfy.clip_model.CLIPEncoder(1, 64, 2, 128, "gelu", torch.float32, "cpu", comfy.ops.manual_cast)
    for p in encoder.parameters():
        torch.nn.init.normal_(p, std=0.05)
    encoder(torch.randn(1, 8, 64), mask=None)
    vae_attn = AttnBlock(32)
    for p in vae_attn.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vae_attn(torch.randn(1, 32, 4, 4))
    assert stats_of(patched)["calls"] == calls_after_sampling
