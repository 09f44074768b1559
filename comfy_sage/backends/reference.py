"""The reference (``comfy_sage.reference``) as a backend: slow, exact to the spec, runs anywhere."""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ..config import VARIANTS
from .base import Call


class ReferenceBackend:
    name = "reference"

    def availability(self) -> Optional[str]:
        return None

    def variants(self, device: torch.device) -> list[str]:
        return list(VARIANTS)

    def tiles(self, cfg, head_dim: int, device: torch.device):
        return cfg.tiles

    def unsupported(self, q, k, v, call: Call) -> Optional[str]:
        return None

    def run(self, q, k, v, call: Call):
        return reference.attention(q, k, v, call)


BACKEND = ReferenceBackend()
