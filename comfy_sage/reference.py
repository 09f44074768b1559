"""The numerics specification: quantized attention emulated in plain PyTorch.

Every kernel is tested against this on the GPU and everything above the kernels is tested
with it on the CPU. It follows the kernels' order of work: smooth and quantize Q and K,
then walk the KV sequence in blocks of ``tiles.blk_k`` with an online softmax (running
max ``m``, running row sum ``l`` of the unquantized P, rescaled accumulator), computing each
block's P·V in the configured mode. With ``QKQuant.NONE`` and ``PVMode.NONE`` it is float32
attention.

Conventions: causal masking is top-left aligned (query i sees keys j <= i, as torch SDPA's
``is_causal``); a query that sees no key returns zeros; the log-sum-exp is in natural-log
units of ``sm_scale * q·k`` and includes the K-smoothing correction ``sm_scale * q·k̄``.
INT8 P·V with ``smooth_v`` quantizes V minus its per-channel mean over tokens and adds the mean
to the output (``v_smoothing``).
"""

from __future__ import annotations

from typing import Optional

import torch

from .call import Call, from_hnd, to_hnd
from .config import PVMode, QKQuant, QuantConfig
from .quant import (
    FP8_E4M3_MAX,
    INT_MAX,
    channel_scale,
    k_groups,
    q_groups,
    quantize_int,
    to_fp16,
    to_fp8,
)

# The static P scales of the quantized P·V modes: P ∈ [0, 1] is mapped onto the format's range.
P_SCALE = {PVMode.FP8: FP8_E4M3_MAX, PVMode.FP8_ACC16: FP8_E4M3_MAX, PVMode.INT8: 255.0}
# The per-channel V targets: max|V[:, d]| maps onto these.
V_TARGET = {PVMode.FP8: FP8_E4M3_MAX, PVMode.INT8: float(INT_MAX[QKQuant.INT8])}
# FP8_ACC16 sums one KV block of P̃·Ṽ in fp16: blk_k · 448 · target must stay below 65504, so the
# target is 144 / blk_k (2.25 for blocks of 64, 0.75 for the Hopper family's 192; the kernels'
# common/types.h pv_v_target).
ACC16_V_BLOCK = 144.0


def v_target(mode: PVMode, tiles) -> Optional[float]:
    """What max|V| per channel maps to in P·V's quantization; None for modes without a V scale."""
    return ACC16_V_BLOCK / tiles.blk_k if mode is PVMode.FP8_ACC16 else V_TARGET.get(mode)
# K extent of one MMA instruction, over which the fp16-accumulating modes round once.
ACC16_CHUNK = {PVMode.FP16_ACC16: 16, PVMode.FP8_ACC16: 32}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Call):
    """Quantized attention as the kernels compute it. Inputs in ``call.layout``, any float
    dtype and device; output in q's layout and dtype, plus lse (B, Hq, Lq) float32."""
    out, lse = _attention_hnd(
        to_hnd(q, call.layout).float(), to_hnd(k, call.layout).float(), to_hnd(v, call.layout).float(),
        call.cfg, call.sm_scale, call.is_causal,
    )
    out = from_hnd(out, call.layout).to(q.dtype)
    return (out, lse) if call.return_lse else out


def smooth_and_quantize(q: torch.Tensor, k: torch.Tensor, cfg: QuantConfig):
    """Q and K as the Q·Kᵀ MMA sees them (dequantized), plus the smoothing terms.

    Returns (q_hat, k_hat, q_mean, k_mean): q_mean (per Q block, broadcast to tokens) is
    None without Q smoothing; k_mean (B, Hk, 1, D) is zeros without K smoothing.
    """
    k_mean = k.mean(dim=2, keepdim=True) if cfg.smooth_k else torch.zeros_like(k[:, :, :1])
    k_smooth = k - k_mean
    q_mean = None
    if cfg.smooth_q:
        # SageAttention2: subtract each Q block's mean; q̄·Kᵀ is added back in high precision.
        blocks = torch.arange(q.shape[2], device=q.device) // cfg.tiles.blk_q
        n_blocks = int(blocks[-1].item()) + 1
        sums = torch.zeros(*q.shape[:2], n_blocks, q.shape[3], device=q.device)
        sums.index_add_(2, blocks, q)
        counts = torch.bincount(blocks, minlength=n_blocks).to(q.dtype).view(1, 1, -1, 1)
        q_mean = (sums / counts).index_select(2, blocks)
        q = q - q_mean
    qg = q_groups(q.shape[2], cfg.granularity, cfg.tiles, q.device)
    kg = k_groups(k.shape[2], cfg.granularity, cfg.tiles, k.device)
    return quantize_int(q, qg, cfg.qk_quant), quantize_int(k_smooth, kg, cfg.qk_quant), q_mean, k_mean


def _attention_hnd(q, k, v, cfg: QuantConfig, sm_scale: float, is_causal: bool):
    b, hq, nq, _ = q.shape
    hk, nk = k.shape[1], k.shape[2]
    group = hq // hk
    q_hat, k_hat, q_mean, k_mean = smooth_and_quantize(q, k, cfg)
    k_smooth = k - k_mean
    v, v_mean = v_smoothing(v, cfg)
    target = v_target(cfg.pv_mode, cfg.tiles)
    v_scale = channel_scale(v, target) if target is not None else None

    def heads(x):  # GQA: quantization is per kv head, the product sees each kv head `group` times
        return x.repeat_interleave(group, dim=1) if group > 1 and x is not None else x

    k_hat, k_smooth, v, v_scale = heads(k_hat), heads(k_smooth), heads(v), heads(v_scale)

    m = torch.full((b, hq, nq, 1), float("-inf"), device=q.device)
    l = torch.zeros((b, hq, nq, 1), device=q.device)
    acc = torch.zeros((b, hq, nq, v.shape[3]), device=q.device)
    q_pos = torch.arange(nq, device=q.device).view(-1, 1)
    blk = cfg.tiles.blk_k
    for start in range(0, nk, blk):
        stop = min(start + blk, nk)
        s = q_hat @ k_hat[:, :, start:stop].transpose(-1, -2)
        if q_mean is not None:
            s = s + q_mean @ k_smooth[:, :, start:stop].transpose(-1, -2)
        s = s * sm_scale
        if is_causal:
            k_pos = torch.arange(start, stop, device=q.device).view(1, -1)
            s = s.masked_fill(k_pos > q_pos, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        # A row that has seen no key yet keeps m = -inf; use 0 there so exp() gives 0, not NaN.
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - m_safe)
        alpha = torch.exp(m - m_safe)
        l = l * alpha + p.sum(dim=-1, keepdim=True)
        pv = block_pv(p, v[:, :, start:stop], v_scale, cfg.pv_mode)
        acc = acc * alpha + pv
        m = m_new

    seen = l != 0  # a query that saw no key has l == 0 (zeros out); a NaN l (a NaN score) stays NaN
    out = acc / torch.where(seen, l, torch.ones_like(l))
    if v_mean is not None:
        out = out + heads(v_mean)  # exact: each row of P / l sums to 1
    out = torch.where(seen, out, torch.zeros_like(acc))
    lse = (m + torch.log(l)).squeeze(-1)
    # K smoothing shifted every score of a row by -sm_scale·q·k̄: add it back.
    lse = lse + sm_scale * (q @ heads(k_mean).transpose(-1, -2)).squeeze(-1)
    return out, lse


def v_smoothing(v: torch.Tensor, cfg: QuantConfig):
    """(V as P·V quantizes it, its per-channel mean over tokens (B, Hk, 1, D) or None).

    INT8 P·V only: P is rounded to steps of 1/255 of the row max, and l sums the unrounded P, so
    the rounding errors do not cancel in P / l; a channel offset c of V then adds c times that
    error to every output (tests/test_reference.py: 3.5x the error on peaked attention with
    N(0, 2²) offsets). With V - c quantized and c added back (exact: each row of P / l sums to 1)
    the error multiplies V's spread only.
    """
    if not (cfg.smooth_v and cfg.pv_mode is PVMode.INT8):
        return v, None
    v_mean = v.mean(dim=2, keepdim=True)
    return v - v_mean, v_mean


def block_pv(p: torch.Tensor, v: torch.Tensor, v_scale, mode: PVMode) -> torch.Tensor:
    """One KV block's contribution P·V (fp32) in the given mode; p ∈ [0, 1]."""
    if mode is PVMode.NONE:
        return p @ v
    if mode is PVMode.FP16:
        return to_fp16(p) @ to_fp16(v)
    if mode is PVMode.FP16_ACC16:
        return _acc16(to_fp16(p), to_fp16(v), ACC16_CHUNK[mode])
    p_scale = P_SCALE[mode]
    if mode is PVMode.INT8:
        p_int = torch.round(p * p_scale).clamp_(0, 255)
        v_int = torch.round(v / v_scale).clamp_(-127, 127)
        # Exact integer sum (int32 in the kernel); float64 holds it exactly.
        return (p_int.double() @ v_int.double()).float() * v_scale / p_scale
    p8, v8 = to_fp8(p * p_scale), to_fp8(v / v_scale)
    if mode is PVMode.FP8:
        # Two-level accumulation: the block goes into a fresh fp32 tile first.
        return (p8 @ v8) * v_scale / p_scale
    return _acc16(p8, v8, ACC16_CHUNK[mode]) * v_scale / p_scale


def _acc16(p: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
    """fp16 accumulation across MMA instructions: each chunk's products are summed exactly
    (fp32 here) and the running sum is rounded to fp16 after every instruction."""
    acc = torch.zeros(*p.shape[:-1], v.shape[-1], dtype=torch.float32, device=p.device)
    for c in range(0, p.shape[-1], chunk):
        acc = to_fp16(acc + p[..., c:c + chunk] @ v[..., c:c + chunk, :])
    return acc
