"""Quantization primitives of the reference: grouping, integer and FP8 rounding.

All functions take float32 tensors shaped (B, H, N, D) and return float32 tensors holding
the *dequantized* values (what a kernel's dequantized product sees), so the reference can
use ordinary float matmuls and still reproduce the integer arithmetic exactly where it is
exact (INT8 products summed in fp32 are exact up to 2^24 / 127^2 ≈ 1040 terms per dot
product chunk, far above the head dims we use).
"""

from __future__ import annotations

import torch

from .config import QKGranularity, QKQuant, Tiles

FP8_E4M3_MAX = 448.0
INT_MAX = {QKQuant.INT8: 127, QKQuant.INT4: 7}


def q_groups(n: int, granularity: QKGranularity, tiles: Tiles, device=None) -> torch.Tensor:
    """Group index of each Q token (0..G-1): tokens with one index share one scale.

    PER_THREAD follows the accumulator fragment of the tensor-core instruction. In both
    ``mma.sync m16n8k32`` (a warp owns ``warp_q`` rows = 16-row m-tiles) and ``wgmma m64``
    (a warpgroup owns 64 rows, each warp 16 of them: ``warp_q = 16``) lane ``l`` holds
    rows ``l // 4`` and ``l // 4 + 8`` of every 16-row m-tile, so the rows one thread
    touches within a warp tile are exactly those with the same ``row % 8``: 8 groups.
    """
    n_idx = torch.arange(n, device=device)
    if granularity is QKGranularity.PER_BLOCK:
        return n_idx // tiles.blk_q
    if granularity is QKGranularity.PER_WARP:
        return n_idx // tiles.warp_q
    return (n_idx // tiles.warp_q) * 8 + n_idx % 8


def k_groups(n: int, granularity: QKGranularity, tiles: Tiles, device=None) -> torch.Tensor:
    """Group index of each K token.

    PER_THREAD: K is the B operand (n dimension) of Q·Kᵀ. In the m16n8 accumulator (and in
    wgmma's, which repeats it every 8 columns) lane ``l`` holds columns ``2*(l % 4)`` and
    ``2*(l % 4) + 1`` of every 8-column n-tile, so within a K block the columns one thread
    touches are those with the same ``(col % 8) // 2``: 4 groups per ``blk_k`` block.
    PER_WARP and PER_BLOCK: one scale per K block (every warp sees the whole block).
    """
    n_idx = torch.arange(n, device=device)
    if granularity is QKGranularity.PER_THREAD:
        return (n_idx // tiles.blk_k) * 4 + (n_idx % 8) // 2
    return n_idx // tiles.blk_k


def group_amax(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """max |x| over tokens and channels of each group: (B, H, N, D), (N,) -> (B, H, G)."""
    b, h, n, _ = x.shape
    n_groups = int(groups.max().item()) + 1
    token_amax = x.abs().amax(dim=-1)  # (B, H, N)
    out = torch.zeros(b, h, n_groups, dtype=x.dtype, device=x.device)
    return out.scatter_reduce(2, groups.expand(b, h, n), token_amax, reduce="amax", include_self=True)


def quantize_int(x: torch.Tensor, groups: torch.Tensor, qk_quant: QKQuant) -> torch.Tensor:
    """Symmetric integer quantization with one scale per group; returns dequantized values.

    scale = amax / qmax; values are rounded to nearest even (``cvt.rni``) and saturated.
    An all-zero group gets scale 1 so that it stays exactly zero.
    """
    if qk_quant is QKQuant.NONE:
        return x
    qmax = INT_MAX[qk_quant]
    amax = group_amax(x, groups)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    per_token = scale.gather(2, groups.expand(*x.shape[:2], -1)).unsqueeze(-1)
    return torch.round(x / per_token).clamp_(-qmax, qmax) * per_token


def channel_scale(v: torch.Tensor, target: float) -> torch.Tensor:
    """Per-channel scale over all tokens of a head, mapping max|V[:, d]| to ``target``: (B, H, 1, D)."""
    amax = v.abs().amax(dim=2, keepdim=True)
    return torch.where(amax > 0, amax / target, torch.ones_like(amax))


def to_fp8(x: torch.Tensor) -> torch.Tensor:
    """Round to float8 e4m3 (round to nearest even, saturating like ``cvt.rn.satfinite``)."""
    return x.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def to_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)
