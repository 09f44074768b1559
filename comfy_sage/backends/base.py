"""What every backend implements (the call it receives is ``comfy_sage.call.Call``).

A backend returns the output in q's layout, dtype and (padded) head dim, plus the
log-sum-exp (B, Hq, Lq) in float32 natural-log units when ``call.return_lse``.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from ..call import Call, from_hnd, to_hnd  # noqa: F401  (re-exported for backend authors)
from ..config import QuantConfig, Tiles


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
