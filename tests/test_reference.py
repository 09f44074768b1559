"""The reference backend against float32 attention: the numerics spec checked on the CPU."""

import math

import pytest
import torch

from comfy_sage import reference
from comfy_sage.accuracy import InputKind, errors, float32_attention, make_inputs
from comfy_sage.backends.base import Call
from comfy_sage.config import (
    MMA_TILES,
    WGMMA_TILES,
    PVMode,
    QKGranularity,
    QKQuant,
    QuantConfig,
    TensorLayout,
    Tiles,
)
from comfy_sage.quant import k_groups, q_groups, to_fp16

EXACT = QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE)


def run(q, k, v, cfg, causal=False, lse=False, layout=TensorLayout.HND, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return reference.attention(q, k, v, Call(layout, causal, scale, lse, cfg))


def true_lse(q, k, scale, causal):
    group = q.shape[1] // k.shape[1]
    s = (q.double() @ k.double().repeat_interleave(group, 1).transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.logsumexp(s, -1).float()


# --- with quantization off the reference is float32 attention -------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk,hq,hk,d", [(100, 100, 2, 2, 64), (130, 77, 4, 2, 128), (65, 300, 3, 1, 64),
                                            (1, 1, 1, 1, 64), (200, 64, 2, 2, 32)])
def test_unquantized_matches_float32(causal, nq, nk, hq, hk, d):
    q, k, v = make_inputs("gaussian", 2, hq, nq, d, kv_tokens=nk, kv_heads=hk, seed=nq + nk)
    for smooth_k in (False, True):
        cfg = QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE, smooth_k=smooth_k)
        out, lse = run(q, k, v, cfg, causal=causal, lse=True)
        ref = float32_attention(q, k, v, is_causal=causal)
        # Both are float32 attention; they differ only in summation order: ~1e-7 relative.
        assert (out - ref).abs().max().item() < 1e-5
        assert (lse - true_lse(q, k, 1 / math.sqrt(d), causal)).abs().max().item() < 1e-5


def test_unquantized_q_smoothing_is_exact():
    q, k, v = make_inputs("gaussian", 1, 2, 200, 64, seed=3)
    q = q + 2.0  # a shared Q mean, what smoothing Q removes (scores stay O(1): fp32 error ~1e-7·|s|)
    out = run(q, k, v, QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE, smooth_q=True))
    assert (out - float32_attention(q, k, v)).abs().max().item() < 1e-5


def test_nhd_layout_is_the_same_function():
    q, k, v = make_inputs("gaussian", 2, 4, 90, 64, kv_tokens=70, kv_heads=2, seed=1)
    cfg = QuantConfig()
    hnd = run(q, k, v, cfg, causal=True)
    nhd = run(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), cfg, causal=True, layout=TensorLayout.NHD)
    assert torch.equal(hnd, nhd.transpose(1, 2))


def test_gqa_equals_repeated_heads():
    q, k, v = make_inputs("k_bias", 1, 6, 80, 64, kv_heads=2, seed=2)
    cfg = QuantConfig(pv_mode=PVMode.INT8)
    grouped = run(q, k, v, cfg)
    # Quantization is per kv head, so repeating heads before quantizing gives the same numbers.
    repeated = run(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), cfg)
    assert torch.allclose(grouped, repeated, atol=1e-6)


def test_causal_rows_past_the_keys_and_single_token():
    q, k, v = make_inputs("gaussian", 1, 1, 1, 64, seed=4)
    out = run(q, k, v, QuantConfig(), causal=True)
    # One key: softmax is 1, so the output is V up to FP8 P·V rounding (P̃ = 448 is exact in e4m3,
    # V's per-channel scale maps each channel's only value onto 448 exactly).
    assert torch.allclose(out, v, rtol=1e-6, atol=1e-6)


# --- each quantized mode against float32 -------------------------------------------------------

# Bounds on rel-L1 for Gaussian float32 inputs (B=1, H=4, N=512, D=128). Each is the public
# anchor for the same scheme (DESIGN.md / issue 3) with headroom for sampling noise:
# FP8 P·V: public SageAttention2 0.038 on bf16 inputs; INT8 Q·K + FP16 P·V: 0.012 target;
# INT8 P·V: 8-bit P quantized with 1/255 steps ~ comfy-kitchen's 0.016 (which adds a Hadamard);
# INT4 Q·K: 15 levels per group, ~16x coarser than INT8 (sage's INT4 mode is ~0.2 rel-L1).
MODE_BOUNDS = {
    "int8qk-fp16pv": 0.012,
    "int8qk-fp16-acc16pv": 0.012,
    "int8qk-fp8pv": 0.038,
    "int8qk-fp8-acc16pv": 0.038,
    "int8qk-int8pv": 0.020,
    "int4qk-fp8pv": 0.25,
}


@pytest.mark.parametrize("variant", list(MODE_BOUNDS))
@pytest.mark.parametrize("tiles", [MMA_TILES, WGMMA_TILES], ids=["mma", "wgmma"])
def test_quantized_modes_within_bounds(variant, tiles):
    from comfy_sage.config import parse_variant

    qk, pv = parse_variant(variant)
    q, k, v = make_inputs("gaussian", 1, 4, 512, 128, seed=11)
    out = run(q, k, v, QuantConfig(qk_quant=qk, pv_mode=pv, tiles=tiles))
    err = errors(out, float32_attention(q, k, v))
    assert err.rel_l1 < MODE_BOUNDS[variant], err
    assert err.cos > 1 - 4 * MODE_BOUNDS[variant] ** 2, err  # cos ≈ 1 - rel²/2 for unbiased noise


@pytest.mark.parametrize("pv,bound", [
    # fp16 has an 11-bit significand: 2^-11 ≈ 4.9e-4 relative rounding of P and V each.
    (PVMode.FP16, 1e-3), (PVMode.FP16_ACC16, 1e-3),
    # e4m3 has a 4-bit significand: 2^-4 relative per element, averaging down over 512 keys.
    (PVMode.FP8, 0.04), (PVMode.FP8_ACC16, 0.04),
    # P in steps of 1/255, V in 255 levels per channel.
    (PVMode.INT8, 0.015),
])
def test_pv_modes_alone(pv, bound):
    q, k, v = make_inputs("gaussian", 1, 2, 256, 64, kv_tokens=512, seed=5)
    out = run(q, k, v, QuantConfig(qk_quant=QKQuant.NONE, pv_mode=pv))
    assert errors(out, float32_attention(q, k, v)).rel_l1 < bound


def test_int8_pv_block_is_exact_integer_arithmetic():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(1, 1, 16, 64, generator=g)
    v = torch.randn(1, 1, 64, 32, generator=g)
    v_scale = v.abs().amax(dim=2, keepdim=True) / 127
    got = reference.block_pv(p, v, v_scale, PVMode.INT8)
    p_int = torch.round(p * 255).to(torch.int64)
    v_int = torch.round(v / v_scale).to(torch.int64)
    want = (p_int @ v_int).double() * v_scale.double() / 255
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=0)


def test_fp16_accumulation_rounds_after_every_instruction():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(1, 1, 16, 64, generator=g)
    v = torch.randn(1, 1, 64, 16, generator=g) * 30
    acc16 = reference.block_pv(p, v, None, PVMode.FP16_ACC16)
    acc32 = reference.block_pv(p, v, None, PVMode.FP16)
    assert torch.equal(acc16, to_fp16(acc16))  # the kernel's fp16 register holds it exactly
    assert not torch.equal(acc16, acc32)  # and it is a different rounding than fp32 accumulation
    assert torch.allclose(acc16, acc32, rtol=4e-3, atol=0.1)


@pytest.mark.parametrize("blk", [64, 192], ids=["mma-64", "sm90-192"])
def test_fp8_fp16_accumulation_cannot_overflow(blk):
    # Worst case of one KV block: every P̃ = 448, every Ṽ at the target 144 / blk →
    # blk·448·144/blk = 64512 < 65504 (64 keys: 2.25; the Hopper family's 192: 0.75).
    target = reference.v_target(PVMode.FP8_ACC16, Tiles(blk_q=128, warp_q=16, blk_k=blk))
    assert target * blk * 448 < 65504
    p = torch.ones(1, 1, 16, blk)
    v = torch.full((1, 1, blk, 8), 3.0)
    v_scale = v.abs().amax(dim=2, keepdim=True) / target
    out = reference.block_pv(p, v, v_scale, PVMode.FP8_ACC16)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full_like(out, blk * 3.0), rtol=1e-3)
    if blk == 192:  # the 64-key blocks' 2.25 overflows here: the target must follow the block
        over = reference.block_pv(p, v, v.abs().amax(dim=2, keepdim=True) / 2.25, PVMode.FP8_ACC16)
        assert not torch.isfinite(over).all()


# --- granularity and smoothing -----------------------------------------------------------------

def qk_error(kind, granularity, smooth_k=True, tiles=MMA_TILES, seed=7):
    q, k, v = make_inputs(kind, 1, 4, 512, 128, seed=seed)
    cfg = QuantConfig(granularity=granularity, pv_mode=PVMode.NONE, smooth_k=smooth_k, tiles=tiles)
    return errors(run(q, k, v, cfg), float32_attention(q, k, v)).rel_l1


@pytest.mark.parametrize("kind", list(InputKind))
@pytest.mark.parametrize("tiles", [MMA_TILES, WGMMA_TILES], ids=["mma", "wgmma"])
def test_finer_granularity_never_loses(kind, tiles):
    thread, warp, block = (qk_error(kind, g, tiles=tiles) for g in
                           (QKGranularity.PER_THREAD, QKGranularity.PER_WARP, QKGranularity.PER_BLOCK))
    # Finer groups are subsets of coarser ones, so no element gets a larger quantization step;
    # 2% slack covers the rare element whose rounding happens to land closer with the larger step.
    assert thread <= warp * 1.02, (thread, warp)
    assert warp <= block * 1.02, (warp, block)


def test_finer_granularity_wins_clearly_when_token_magnitudes_vary():
    thread = qk_error(InputKind.TOKEN_SCALE, QKGranularity.PER_THREAD)
    block = qk_error(InputKind.TOKEN_SCALE, QKGranularity.PER_BLOCK)
    assert thread < 0.7 * block, (thread, block)


@pytest.mark.parametrize("kind", [InputKind.K_BIAS, InputKind.ROPE_VIDEO])
def test_k_smoothing_cuts_error_on_biased_k(kind):
    smooth = qk_error(kind, QKGranularity.PER_THREAD, smooth_k=True)
    raw = qk_error(kind, QKGranularity.PER_THREAD, smooth_k=False)
    assert raw >= 5 * smooth, (raw, smooth)


def test_q_smoothing_helps_when_q_has_a_shared_mean():
    q, k, v = make_inputs("gaussian", 1, 2, 256, 128, seed=8)
    q = q + 6.0 * torch.randn(1, 2, 1, 128)
    ref = float32_attention(q, k, v)
    plain = errors(run(q, k, v, QuantConfig(pv_mode=PVMode.NONE, granularity="per_block")), ref).rel_l1
    smooth = errors(run(q, k, v, QuantConfig(pv_mode=PVMode.NONE, granularity="per_block", smooth_q=True)),
                    ref).rel_l1
    assert smooth < 0.5 * plain, (smooth, plain)


def test_lse_is_corrected_for_k_smoothing():
    q, k, v = make_inputs("k_bias", 1, 2, 128, 64, seed=9)
    scale = 1 / 8
    _, lse = run(q, k, v, QuantConfig(pv_mode=PVMode.NONE, smooth_k=True), lse=True, scale=scale)
    # Only the INT8 rounding of the scores separates it from the true lse (|Δs| ≲ 0.02 here).
    assert (lse - true_lse(q, k, scale, False)).abs().max().item() < 0.05
    _, lse_raw = run(q, k, v, QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE, smooth_k=True),
                     lse=True, scale=scale)
    assert (lse_raw - true_lse(q, k, scale, False)).abs().max().item() < 1e-4


# --- the groups themselves ---------------------------------------------------------------------

def test_per_thread_groups_follow_the_mma_fragment():
    tiles = Tiles(blk_q=128, warp_q=32, blk_k=64)
    qg = q_groups(64, QKGranularity.PER_THREAD, tiles)
    # lane l holds rows l//4 and l//4+8 of each 16-row m-tile: rows 0, 8, 16, 24 share group 0.
    assert qg[[0, 8, 16, 24]].unique().tolist() == [0]
    assert qg[32].item() == 8 and qg[33].item() == 9  # the next warp tile starts 8 new groups
    kg = k_groups(130, QKGranularity.PER_THREAD, tiles)
    # lane l holds columns 2(l%4), 2(l%4)+1 of every 8-column n-tile: 4 groups per K block.
    assert kg[:8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and kg[8:16].tolist() == kg[:8].tolist()
    assert kg[64].item() == 4 and kg[129].item() == 8
    assert q_groups(300, QKGranularity.PER_WARP, tiles).max().item() == 9  # ceil(300/32) - 1
    assert k_groups(300, QKGranularity.PER_BLOCK, tiles).max().item() == 4  # ceil(300/64) - 1


# --- V smoothing (INT8 P·V) ----------------------------------------------------------------------

def _int8pv(smooth_v, **kw):
    return QuantConfig(pv_mode=PVMode.INT8, smooth_v=smooth_v, **kw)


def test_v_smoothing_makes_int8_pv_blind_to_a_channel_offset():
    """With V smoothing, V and V + c (c per channel) quantize to the same integers, so the
    outputs differ by exactly c (each row of P / l sums to 1): only fp32 rounding of the mean
    (~1e-7 relative) separates them, which can flip the int8 rounding of a rare V element."""
    q, k, v = make_inputs("gaussian", 1, 2, 300, 64, seed=11)
    c = 3.0 * torch.randn(1, 2, 1, 64)
    out = run(q, k, v, _int8pv(True))
    shifted = run(q, k, v + c, _int8pv(True))
    assert errors(shifted - c, out).rel_l1 < 1e-4
    raw = run(q, k, v + c, _int8pv(False))
    assert errors(raw - c, out).rel_l1 > 10 * errors(shifted - c, out).rel_l1  # without it c leaks in


def test_v_smoothing_cuts_int8_pv_error_on_biased_v():
    # Peaked attention (3x the usual scale) on V with N(0, 2²) channel offsets: P's rounding error
    # does not cancel in P / l, and without smoothing it multiplies the offset (measured on this
    # seed: rel-L1 0.015 raw, 0.0042 smoothed; FP16 P·V 0.0036).
    q, k, v = make_inputs(InputKind.V_BIAS, 1, 2, 512, 64, seed=1)
    scale = 3 / 8
    ref = float32_attention(q, k, v, sm_scale=scale)
    raw = errors(run(q, k, v, _int8pv(False), scale=scale), ref).rel_l1
    smooth = errors(run(q, k, v, _int8pv(True), scale=scale), ref).rel_l1
    assert smooth * 2.5 <= raw, (smooth, raw)


@pytest.mark.parametrize("pv", [PVMode.FP16, PVMode.FP8, PVMode.FP8_ACC16])
def test_v_smoothing_only_changes_int8_pv(pv):
    q, k, v = make_inputs(InputKind.V_BIAS, 1, 2, 200, 64, seed=5)
    on = run(q, k, v, QuantConfig(pv_mode=pv, smooth_v=True))
    off = run(q, k, v, QuantConfig(pv_mode=pv, smooth_v=False))
    assert torch.equal(on, off)


def test_v_smoothing_leaves_the_lse_alone():
    # The lse depends on the scores only; smoothing V must not change it (GQA, causal, Lq != Lk).
    q, k, v = make_inputs(InputKind.V_BIAS, 1, 4, 70, 64, kv_tokens=90, kv_heads=2, seed=6)
    out_on, lse_on = run(q, k, v, _int8pv(True), causal=True, lse=True)
    _, lse_off = run(q, k, v, _int8pv(False), causal=True, lse=True)
    assert torch.isfinite(out_on).all()
    assert torch.equal(lse_on, lse_off)
