"""The Sage Attention node's settings as one frozen object the override reads.

Plain data, no ComfyUI import: ``nodes.py`` turns the widgets into a :class:`PatchConfig`
(schedule percents become sigmas there, because only the host knows the model's sampling)
and the override in :mod:`comfy_sage.comfy.override` never looks at anything else.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Optional

from ..config import VARIANTS, QKGranularity, _StrEnum


class NodeBackend(_StrEnum):
    """What the node's ``backend`` combo offers.

    AUTO: ``comfy_sage``'s own ``auto`` choice: a quantized kernel only where it was measured to
      win over PyTorch attention (GPUs in ``dispatch.RULES``), the host's attention everywhere
      else, the CPU included (the reference backend runs only when asked for by name).
    OFF: the node passes the model through untouched (for A/B comparisons in one graph).
    """

    AUTO = "auto"
    CUDA = "cuda"
    TRITON = "triton"
    REFERENCE = "reference"
    OFF = "off"


# Variants offered in the node, in the order shown. INT4 Q·K is left out: it needs a
# per-model accuracy check first (issue 4 lists only these four).
NODE_VARIANTS: tuple[str, ...] = tuple(
    name for name in ("int8qk-fp8pv", "int8qk-fp16pv", "int8qk-int8pv", "int8qk-fp8-acc16pv") if name in VARIANTS
)
AUTO = "auto"

# Sigma bounds meaning "the whole schedule" (ComfyUI's percent_to_sigma(0.0) is 999999999.9).
SIGMA_MAX = float("inf")
SIGMA_MIN = 0.0


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """Everything the override needs to decide, per attention call, what runs.

    sigma_start/sigma_end: the override quantizes while ``sigma_end <= sigma <= sigma_start``
      (sigma from ``transformer_options["sigmas"]``); calls without a sigma count as inside.
    full_precision_first/last: DiT blocks (by ``transformer_options["block_index"]`` and
      ``["total_blocks"]``) that keep the host attention. ``last_stage_type`` names the
      ``block_type`` of a model's final stage (Flux/HunyuanVideo: "single"), so that
      "first N" counts in the first stage and "last N" in the last.
    exact_kv_lengths: cross-attention key lengths that always keep the host attention
      (Wan image-to-video image tokens on hosts that do not pass
      ``low_precision_attention=False`` themselves).
    """

    backend: NodeBackend = NodeBackend.AUTO
    variant: Optional[str] = None  # None: auto's measured variant per call, a forced backend's default
    qk_granularity: Optional[QKGranularity] = None  # None: the backend's default
    smooth_k: bool = True
    smooth_q: bool = False
    sigma_start: float = SIGMA_MAX
    sigma_end: float = SIGMA_MIN
    full_precision_first: int = 0
    full_precision_last: int = 0
    last_stage_type: Optional[str] = None
    exact_kv_lengths: frozenset = frozenset()
    allow_compile: bool = True
    nan_guard: bool = False
    host_uses_sage: bool = False  # ComfyUI started with --use-sage-attention: never double-patch
    timing: bool = False  # measure attention time (synchronizes CUDA around each call)

    def __post_init__(self):
        object.__setattr__(self, "backend", NodeBackend.parse(self.backend, "backend"))
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {AUTO}|{'|'.join(VARIANTS)}, got {self.variant!r}")
        if self.qk_granularity is not None:
            object.__setattr__(self, "qk_granularity", QKGranularity.parse(self.qk_granularity, "qk_granularity"))
        if self.sigma_end > self.sigma_start:
            raise ValueError(
                f"schedule window: sigma_end ({self.sigma_end}) must not exceed sigma_start ({self.sigma_start})"
            )
        for name in ("full_precision_first", "full_precision_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a non-negative block count, got {getattr(self, name)}")
        object.__setattr__(self, "exact_kv_lengths", frozenset(int(n) for n in self.exact_kv_lengths))

    @classmethod
    def from_widgets(cls, backend: str, variant: str, qk_granularity: str, **rest) -> "PatchConfig":
        """Widget strings to a config: 'auto' means "let the backend choose" (None)."""
        return cls(
            backend=backend,
            variant=None if variant == AUTO else variant,
            qk_granularity=None if qk_granularity == AUTO else qk_granularity,
            **rest,
        )

    @property
    def windowed(self) -> bool:
        """Whether a schedule window narrower than the whole schedule is set."""
        return self.sigma_start != SIGMA_MAX or self.sigma_end != SIGMA_MIN

    def describe(self) -> dict:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, frozenset):
                value = sorted(value)
            out[field.name] = value
        return out
