"""Every runnable backend+variant as a callable with ``sageattn``'s signature.

``bench`` iterates this, and so can any outside benchmark:

    for name, fn in comfy_sage.variants("cuda").items():
        out = fn(q, k, v, tensor_layout="HND", is_causal=False)
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from . import backends
from .api import sageattn


def variants(device: Optional[torch.device | str] = None) -> dict[str, Callable]:
    """Stable name (``<backend>.<variant>``, e.g. ``cuda.int8qk-fp8pv``, ``sdpa.cudnn``) to a
    callable with ``sageattn``'s signature, for every variant that runs on ``device``
    (default: the current CUDA device if there is one, else the CPU)."""
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch.device or a name such as 'cuda' or 'cpu', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} is not available here (no CUDA device is visible to PyTorch); "
                         "use 'cpu' or None")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"device: expected a cuda or cpu device, got {str(device)!r}")
    table = {}
    for name in backends.NAMES:
        impl = backends.get(name)
        if impl is None:
            continue
        for variant in impl.variants(device):
            fn = functools.partial(sageattn, backend=name, variant=variant)
            functools.update_wrapper(fn, sageattn)
            table[f"{name}.{variant}"] = fn
    return table
