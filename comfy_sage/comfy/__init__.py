"""The ComfyUI adapter: the attention override, its settings and its statistics.

Imports only torch, the standard library and ``comfy_sage``: never ComfyUI itself, so the
override is tested without a host (``tests/test_override.py``).
"""

from .options import NODE_VARIANTS, NodeBackend, PatchConfig
from .override import OVERRIDE_KEY, SageAttentionOverride, chain, find, install
from .stats import Stats

__all__ = ["NODE_VARIANTS", "NodeBackend", "PatchConfig", "OVERRIDE_KEY", "SageAttentionOverride", "chain", "find",
           "install", "Stats"]
