"""Accuracy metrics and generators of realistic attention inputs.

Metrics compare an output with a float32 (or float64) reference. The generators produce
the input statistics that make quantized attention hard in real diffusion transformers:
K with a large per-channel bias shared by all tokens (what K smoothing removes), V with a
per-channel offset (what V smoothing removes from INT8 P·V's error), Q with a few outlier
channels, token magnitudes that vary (what finer granularity helps), and
3D-RoPE-rotated Q/K over a video token grid.
"""

from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class Errors:
    cos: float  # cosine similarity of the flattened outputs
    rel_l1: float  # sum|out - ref| / sum|ref|
    rmse: float
    max_abs: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def errors(out: torch.Tensor, ref: torch.Tensor) -> Errors:
    """Error metrics of ``out`` against ``ref`` (computed in float64). NaN anywhere is reported
    as NaN in every metric, never hidden."""
    if out.shape != ref.shape:
        raise ValueError(f"out, ref: shapes differ: {tuple(out.shape)} and {tuple(ref.shape)}")
    o = out.detach().double().flatten()
    r = ref.detach().double().flatten()
    if not torch.isfinite(o).all():
        nan = float("nan")
        return Errors(nan, nan, nan, nan)
    diff = o - r
    denom = (o.norm() * r.norm()).item()
    cos = (o @ r).item() / denom if denom > 0 else float(torch.equal(o, r))
    ref_l1 = r.abs().sum().item()
    rel_l1 = diff.abs().sum().item() / ref_l1 if ref_l1 > 0 else diff.abs().sum().item()
    return Errors(
        cos=cos,
        rel_l1=rel_l1,
        rmse=math.sqrt((diff * diff).mean().item()),
        max_abs=diff.abs().max().item(),
    )


class InputKind(str, Enum):
    GAUSSIAN = "gaussian"
    K_BIAS = "k_bias"  # K = N(0,1) + a per-channel bias shared by all tokens (as in real DiTs)
    Q_OUTLIERS = "q_outliers"  # a few Q channels 10-20x larger than the rest
    TOKEN_SCALE = "token_scale"  # per-token magnitudes spread over two orders of magnitude
    ROPE_VIDEO = "rope_video"  # 3D RoPE over a (frames, height, width) grid, then K bias
    V_BIAS = "v_bias"  # V = N(0,1) + a per-channel offset ~ N(0, 2²) shared by all tokens (real activations have one)


def make_inputs(
    kind: InputKind | str,
    batch: int,
    heads: int,
    tokens: int,
    head_dim: int,
    kv_tokens: Optional[int] = None,
    kv_heads: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
):
    """(q, k, v) in HND layout, (B, H, N, D), drawn for ``kind`` with a fixed seed."""
    kind = InputKind(kind)
    kv_tokens = tokens if kv_tokens is None else kv_tokens
    kv_heads = heads if kv_heads is None else kv_heads
    g = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    q = randn(batch, heads, tokens, head_dim)
    k = randn(batch, kv_heads, kv_tokens, head_dim)
    v = randn(batch, kv_heads, kv_tokens, head_dim)
    if kind is InputKind.ROPE_VIDEO:
        q = rope_3d(q, video_grid(tokens))
        k = rope_3d(k, video_grid(kv_tokens))
    if kind in (InputKind.K_BIAS, InputKind.ROPE_VIDEO):
        # The shared channel bias is seen in keys as the attention kernel receives them
        # (after RoPE), which is what SageAttention's K smoothing targets.
        k = k + 8.0 * randn(batch, kv_heads, 1, head_dim)
    if kind is InputKind.V_BIAS:
        v = v + 2.0 * randn(batch, kv_heads, 1, head_dim)
    if kind is InputKind.Q_OUTLIERS:
        n_out = max(1, head_dim // 32)
        channels = torch.randperm(head_dim, generator=g)[:n_out]
        q[..., channels] *= 10.0 + 10.0 * torch.rand(n_out, generator=g)
    if kind is InputKind.TOKEN_SCALE:
        q = q * torch.exp(2.3 * torch.rand(batch, heads, tokens, 1, generator=g) - 1.15) ** 2
        k = k * torch.exp(2.3 * torch.rand(batch, kv_heads, kv_tokens, 1, generator=g) - 1.15) ** 2
    return tuple(x.to(device=device, dtype=dtype) for x in (q, k, v))


def video_grid(tokens: int) -> tuple[int, int, int]:
    """A (frames, height, width) grid with frames*height*width >= tokens, shaped like
    Wan's 480p latent grid."""
    # Wan 2.1 480p: 21 latent frames of 30x52 = 1560 tokens; small inputs get a few frames.
    frames = round(tokens / 1560) if tokens >= 1560 else round(tokens ** (1 / 3) / 2)
    frames = max(1, min(frames, tokens))
    per_frame = math.ceil(tokens / frames)
    height = max(1, int(math.sqrt(per_frame * 30 / 52)))
    width = math.ceil(per_frame / height)
    return frames, height, width


def rope_3d(x: torch.Tensor, grid: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """Rotate pairs of channels by angles from each token's (t, h, w) position, the head dim
    split between the three axes as in Wan/HunyuanVideo (t gets the remainder)."""
    n, d = x.shape[2], x.shape[3]
    frames, height, width = grid
    idx = torch.arange(n)
    pos = torch.stack([idx // (height * width), (idx // width) % height, idx % width], dim=-1).float()
    half = d // 2
    split_hw = half // 3
    sizes = [half - 2 * split_hw, split_hw, split_hw]
    angles = []
    for axis, size in enumerate(sizes):
        if size == 0:
            continue
        freqs = theta ** (-torch.arange(size, dtype=torch.float32) / size)
        angles.append(pos[:, axis:axis + 1] * freqs)
    angle = torch.cat(angles, dim=-1)  # (N, D/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def float32_attention(q, k, v, is_causal: bool = False, sm_scale: Optional[float] = None) -> torch.Tensor:
    """Attention in float32 (HND), the accuracy reference: TF32 off, GQA expanded."""
    q, k, v = (x.float() for x in (q, k, v))
    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=sm_scale)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
