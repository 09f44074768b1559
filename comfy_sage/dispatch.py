"""How ``backend="auto"`` chooses: a table of measured wins, SDPA everywhere else.

A rule may only be added with a committed benchmark (``evidence``) showing that its
variant beats every SDPA kernel for that shape class on that architecture, with the
accuracy gate met. With no rule matching, auto uses SDPA: never slower than the host.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import torch


@dataclasses.dataclass(frozen=True)
class Rule:
    capability: tuple[int, int]  # torch.cuda.get_device_capability()
    head_dims: tuple[int, ...]  # padded head dims the rule covers
    min_q_tokens: int  # the win was measured from this query length up
    min_kv_tokens: int
    causal: bool  # the masking the win was measured with
    backend: str
    variant: str
    evidence: str  # bench/results/<file>.json


RULES: tuple[Rule, ...] = (
    # H200 (sm_90), bf16, head dim 128: the Hopper family (csrc/sm90/, INT8 Q·K + FP8 P·V on wgmma)
    # beats every SDPA kernel from 8192 tokens non-causal (1.16x the fastest at 4x32x8192, 1.32-1.35x
    # at 16k-32k, 1.44-1.53x at the Wan/HunyuanVideo shapes) and from 16384 causal (1.23-1.34x; 1.04x
    # at 8192, within run-to-run noise, so not claimed). Below that, and at head dim 64 (0.49-0.99x),
    # SDPA. rel-L1 0.036-0.039 vs float32 (SageAttention2's scheme).
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=8192, min_kv_tokens=8192, causal=False,
         backend="cuda", variant="int8qk-fp8pv", evidence="bench/results/2026-12-02-h200-sweep-4x32.json"),
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=16384, min_kv_tokens=16384, causal=True,
         backend="cuda", variant="int8qk-fp8pv", evidence="bench/results/2026-12-02-h200-sweep-4x32.json"),
    # Where the native library is not built (install.py not run), the Triton kernels:
    # H200 (sm_90), bf16, non-causal, head dim 128: triton INT8-QK + FP8-PV 1.08-1.11x cuDNN SDPA
    # from 32760 tokens (Wan 2.1 1.3B/14B 480p and 720p, HunyuanVideo 720p); 0.99x at 16384 and
    # 0.91x at 8192, so the rule starts at 32760. rel-L1 0.039 vs float32 (SageAttention2's scheme).
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=32760, min_kv_tokens=32760, causal=False,
         backend="triton", variant="int8qk-fp8pv", evidence="bench/results/2026-11-22-h200-final-bench.json"),
)
# Per capability, the fewest tokens any rule covers: the image-size calls that fall back (every
# call of an SDXL or Flux step) leave after one dictionary lookup and two comparisons.
_FLOORS = {cap: (min(r.min_q_tokens for r in RULES if r.capability == cap),
                 min(r.min_kv_tokens for r in RULES if r.capability == cap))
           for cap in {rule.capability for rule in RULES}}


@functools.lru_cache(maxsize=None)
def capability(index: Optional[int]) -> tuple[int, int]:
    """A device's compute capability, asked once per process (it cannot change while it runs)."""
    return tuple(torch.cuda.get_device_capability(index))


def choose(device: torch.device, head_dim: int, tokens_q: int, tokens_kv: int, is_causal: bool,
           usable: Callable[[Rule], bool] = lambda rule: True) -> Optional[Rule]:
    """The first rule that covers this call on q's device and is ``usable`` (e.g. its backend is
    available here), or None (then: SDPA)."""
    if device.type != "cuda":
        return None
    return choose_cuda(device.index, head_dim, tokens_q, tokens_kv, is_causal, usable)


def choose_cuda(index: Optional[int], head_dim: int, tokens_q: int, tokens_kv: int, is_causal: bool,
                usable: Callable[[Rule], bool] = lambda rule: True) -> Optional[Rule]:
    """``choose`` for a CUDA device by index: what the per-call path uses (``torch.device``'s
    ``type`` and ``index`` cost 0.3 µs each to read, a tensor's ``get_device()`` 0.1)."""
    cap = capability(index)
    floor = _FLOORS.get(cap)
    if floor is None or tokens_q < floor[0] or tokens_kv < floor[1]:
        return None
    for rule in RULES:
        if (
            rule.capability == cap
            and head_dim in rule.head_dims
            and tokens_q >= rule.min_q_tokens
            and tokens_kv >= rule.min_kv_tokens
            and rule.causal == is_causal
            and usable(rule)
        ):
            return rule
    return None


NO_RULE_CUDA = "where no quantized kernel was measured faster than SDPA on this GPU"
_NO_RULE = {"cuda": NO_RULE_CUDA}


def no_rule_reason(device: torch.device) -> str:
    """Why ``choose`` found nothing, as a stable phrase following "calls ..." (no shapes)."""
    kind = device.type
    reason = _NO_RULE.get(kind)
    if reason is None:  # formatted once per device type: this is on every fallback's path
        reason = _NO_RULE[kind] = f"on {kind} tensors (auto quantizes only on GPUs where a kernel was measured faster)"
    return reason
