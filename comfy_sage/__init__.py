"""comfy-sage: quantized attention (the SageAttention family) for diffusion and video models.

Importable without ComfyUI, a GPU or the compiled library: ``sageattn`` then runs on the
backends that are there (``available_backends()`` says which, and why not the others).
"""

from .api import Plan, plan, run, sageattn
from .backends import available_backends
from .config import (
    VARIANTS,
    PVMode,
    QKGranularity,
    QKQuant,
    QuantConfig,
    TensorLayout,
    Tiles,
)
from .variants import variants

__version__ = "0.1.0"

__all__ = [
    "sageattn",
    "plan",
    "run",
    "Plan",
    "available_backends",
    "variants",
    "VARIANTS",
    "PVMode",
    "QKGranularity",
    "QKQuant",
    "QuantConfig",
    "TensorLayout",
    "Tiles",
    "__version__",
]
