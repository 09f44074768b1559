"""What every backend implements, and the normalised call the API hands it.

The API (``comfy_sage.api``) validates and normalises before a backend sees anything:
q, k, v share one dtype (float16 or bfloat16) and one device, their last dimension is
contiguous, the head dimension is 64, 128 or 256 (others were zero-padded), q heads are a
multiple of k/v heads, no tensor is empty, and ``call.layout`` says how the axes are laid out.
A backend returns the output in q's layout, dtype and (padded) head dim, plus the
log-sum-exp (B, Hq, Lq) in float32 natural-log units when ``call.return_lse``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import torch

from ..config import QuantConfig, TensorLayout, Tiles


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
    # The head dim the backend's ``run`` receives (64, 128 or 256: the API zero-pads others).
    head_dim: int = 0


class Backend(Protocol):
    name: str

    def availability(self) -> Optional[str]:
        """None when the backend can run in this process, else why not (one sentence)."""

    def variants(self, device: torch.device) -> list[str]:
        """Variant names (``config.VARIANTS`` keys, or the backend's own for SDPA) runnable on device."""

    def tiles(self, cfg: QuantConfig, head_dim: int, device: torch.device) -> Tiles:
        """The tiles this backend's kernels quantize with (the quantization groups follow them);
        the API puts them into ``call.cfg`` unless the caller chose tiles explicitly."""

    def unsupported(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Call) -> Optional[str]:
        """None when ``run`` accepts this call, else why not. Checked before any launch and
        before padding: q, k, v are the caller's tensors (float32 among them is cast to
        bfloat16 before ``run``); judge the head dim by ``call.head_dim``."""

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: Call):
        """Output tensor, or (output, lse) when call.return_lse."""


def to_hnd(x: torch.Tensor, layout: TensorLayout) -> torch.Tensor:
    """A (B, H, N, D) view of x: no copy."""
    return x if layout is TensorLayout.HND else x.transpose(1, 2)


def from_hnd(x: torch.Tensor, layout: TensorLayout) -> torch.Tensor:
    return x if layout is TensorLayout.HND else x.transpose(1, 2)
