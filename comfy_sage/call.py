"""The normalised call a backend receives: plain data, shared by the API, the backends and the reference.

Its own module (not ``backends/``) so that the numerics reference and the backends both import
it without the reference importing the backends package.

The API (``comfy_sage.api.plan``) validates and normalises before a backend sees anything:
q, k, v share one dtype and one device, their last dimension is contiguous, q heads are a
multiple of k/v heads, no tensor is empty, and ``layout`` says how the axes are laid out.
For the quantized backends the dtype is float16 or bfloat16 and the head dimension 64, 128 or
256 (others were zero-padded); SDPA gets the caller's tensors unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .config import QuantConfig, TensorLayout


@dataclasses.dataclass(frozen=True)
class Call:
    layout: TensorLayout
    is_causal: bool  # top-left aligned, like torch SDPA: query i sees keys j <= i
    sm_scale: float
    return_lse: bool
    cfg: QuantConfig
    # The backend's own variant name: ``cfg.variant`` for quantized backends, the SDPA kernel
    # (``default``, ``flash``, ``efficient``, ``cudnn``, ``math``) for sdpa.
    variant: str = ""
    # The head dim the backend's ``run`` receives (quantized backends: 64, 128 or 256).
    head_dim: int = 0
    # Bool or additive mask broadcastable to (B, Hq, Lq, Lk); only SDPA takes one.
    attn_mask: Optional[torch.Tensor] = dataclasses.field(default=None, compare=False, repr=False)


def to_hnd(x: torch.Tensor, layout: TensorLayout) -> torch.Tensor:
    """A (B, H, N, D) view of x: no copy."""
    return x if layout is TensorLayout.HND else x.transpose(1, 2)


def from_hnd(x: torch.Tensor, layout: TensorLayout) -> torch.Tensor:
    return x if layout is TensorLayout.HND else x.transpose(1, 2)
