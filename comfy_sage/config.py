"""The vocabulary shared by every layer: layouts, quantization modes, kernel variants.

Everything here is plain data (enums and frozen dataclasses) so that the API, the
reference, the backends and the ComfyUI adapter all speak the same names.
"""

from __future__ import annotations

import dataclasses
from enum import Enum


class _StrEnum(str, Enum):
    """An enum whose members compare equal to their string value ("HND" == TensorLayout.HND)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value, argument: str):
        """Accept a member or its string value; raise a ValueError naming the argument otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            supported = "|".join(m.value for m in cls)
            raise ValueError(f"{argument}: expected one of {supported}, got {value!r}") from None


class TensorLayout(_StrEnum):
    HND = "HND"  # (batch, heads, tokens, head_dim)
    NHD = "NHD"  # (batch, tokens, heads, head_dim)


class QKQuant(_StrEnum):
    INT8 = "int8"
    INT4 = "int4"
    NONE = "none"  # Q·Kᵀ in the input precision (reference only; used to isolate P·V error)


class QKGranularity(_StrEnum):
    """How many tokens share one Q (or K) scale.

    PER_BLOCK: one scale per CTA tile of Q (blk_q rows) and of K (blk_k rows).
    PER_WARP: one Q scale per warp tile (warp_q rows); K stays per block.
    PER_THREAD: the rows one thread of the MMA fragment holds share a scale (see
      ``reference.qk_groups``): 8 Q scales per warp tile, 4 K scales per K block.
    """

    PER_BLOCK = "per_block"
    PER_WARP = "per_warp"
    PER_THREAD = "per_thread"


class PVMode(_StrEnum):
    """How P·V is computed.

    NONE: P and V in float32 (the unquantized limit; reference only).
    FP16: P and V rounded to fp16, products accumulated in fp32 (SageAttention2 sm80 kernels).
    FP16_ACC16: fp16 operands, fp16 accumulation inside each KV block, flushed to fp32 (SageAttention v1).
    FP8: P to e4m3 with the static scale 448, V to e4m3 per channel, each KV block accumulated
      into a fresh fp32 tile and added to the true fp32 accumulator (SageAttention2).
    FP8_ACC16: as FP8 but accumulated in fp16 inside a KV block; V's per-channel scale maps
      max|V| to 144 / blk_k (2.25 for blocks of 64) so that one block of P̃·Ṽ stays below the
      fp16 maximum (SageAttention2++).
    INT8: P to unsigned 8-bit (×255), V to signed 8-bit per channel, exact int32 accumulation
      inside each KV block.
    """

    NONE = "none"
    FP16 = "fp16"
    FP16_ACC16 = "fp16-acc16"
    FP8 = "fp8"
    FP8_ACC16 = "fp8-acc16"
    INT8 = "int8"


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes the quantization groups follow. Kernels report theirs; the defaults are
    SageAttention2's mma.sync tiles (``MMA_TILES``); ``WGMMA_TILES`` are its sm90 wgmma ones.
    The per-thread grouping formula is the same for both fragments (see ``quant.q_groups``)."""

    blk_q: int = 128
    warp_q: int = 32
    blk_k: int = 64

    def __post_init__(self):
        for name in ("blk_q", "warp_q", "blk_k"):
            value = getattr(self, name)
            if value <= 0 or value % 8:
                raise ValueError(f"tiles.{name}: expected a positive multiple of 8, got {value}")
        if self.blk_q % self.warp_q:
            raise ValueError(f"tiles: blk_q ({self.blk_q}) must be a multiple of warp_q ({self.warp_q})")


MMA_TILES = Tiles(blk_q=128, warp_q=32, blk_k=64)
WGMMA_TILES = Tiles(blk_q=64, warp_q=16, blk_k=128)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Everything that decides the numerics of one quantized attention call."""

    qk_quant: QKQuant = QKQuant.INT8
    granularity: QKGranularity = QKGranularity.PER_THREAD
    pv_mode: PVMode = PVMode.FP8
    smooth_k: bool = True
    smooth_q: bool = False
    tiles: Tiles = MMA_TILES
    # INT8 P·V only (the other modes ignore it): subtract V's per-channel mean over tokens before
    # quantizing V and add it to the output, exact since each softmax row sums to 1. Without it a
    # per-channel offset of V turns P's rounding error into an output error times the offset.
    smooth_v: bool = True

    def __post_init__(self):
        # Accept the string values too ("int8", "per_warp"); store the enum members.
        for name, enum in (("qk_quant", QKQuant), ("granularity", QKGranularity), ("pv_mode", PVMode)):
            object.__setattr__(self, name, enum.parse(getattr(self, name), name))

    @property
    def quantized(self) -> bool:
        return self.qk_quant is not QKQuant.NONE or self.pv_mode is not PVMode.NONE

    @property
    def variant(self) -> str:
        """The stable variant name of this configuration's (QK, PV) pair, e.g. 'int8qk-fp8pv'."""
        return variant_name(self.qk_quant, self.pv_mode)


def variant_name(qk_quant: QKQuant, pv_mode: PVMode) -> str:
    return f"{qk_quant.value}qk-{pv_mode.value}pv"


# The named (QK, PV) pairs a user can ask for by name; the first is the default.
VARIANTS: dict[str, tuple[QKQuant, PVMode]] = {
    variant_name(qk, pv): (qk, pv)
    for qk, pv in [
        (QKQuant.INT8, PVMode.FP8),
        (QKQuant.INT8, PVMode.FP16),
        (QKQuant.INT8, PVMode.FP16_ACC16),
        (QKQuant.INT8, PVMode.FP8_ACC16),
        (QKQuant.INT8, PVMode.INT8),
        (QKQuant.INT4, PVMode.FP8),
    ]
}
DEFAULT_VARIANT = next(iter(VARIANTS))


def parse_variant(name: str) -> tuple[QKQuant, PVMode]:
    if name not in VARIANTS:
        raise ValueError(f"variant: expected one of {'|'.join(VARIANTS)}, got {name!r}")
    return VARIANTS[name]
