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


SWEEP_SM90 = "bench/results/2026-12-03-h200-sweep-4x32-v15.json"  # bench/public_sage.py --sweep-only
RULES: tuple[Rule, ...] = (
    # H200 (sm_90), bf16: the Hopper family (csrc/sm90/, INT8 Q·K + FP8 P·V on wgmma), timed beside
    # cuDNN, SDPA's default and the public SageAttention 2.2 in one process (the 4x32 sweep), first
    # match wins (a variant picked by hand takes the first rule of that variant: the last two rules
    # are for that). Head dim 128, non-causal: int8qk-fp8-acc16pv (192-key blocks, f16 block sums) from
    # 32760 tokens, 1.47x the fastest SDPA at 4x32x32768 (fp8pv 1.42x) and 1.61-1.69x cuDNN at the Wan
    # and HunyuanVideo shapes (bench/results/2026-12-03-h200-sm90-v15-fp8-acc16.json); int8qk-fp8pv from
    # 8192, 1.31x / 1.38x at 8k / 16k where it leads fp8-acc16 (1.28x / 1.33x). 4096 gives 1.16x at
    # 4x32 but Flux (1x24x4608) only 1.0x, so the rule starts at 8192. Causal, head dim 128: fp8-acc16
    # from 8192 (1.23-1.48x; 4096: 1.01x). Head dim 64: fp8-acc16 from 8192 non-causal (1.11-1.25x)
    # and 16384 causal (1.14-1.22x; 8192: 1.00x). Below, SDPA. rel-L1 0.036-0.039 vs float32
    # (SageAttention2's scheme; the public kernel's to the third digit).
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=32760, min_kv_tokens=32760, causal=False,
         backend="cuda", variant="int8qk-fp8-acc16pv", evidence=SWEEP_SM90),
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=8192, min_kv_tokens=8192, causal=False,
         backend="cuda", variant="int8qk-fp8pv", evidence=SWEEP_SM90),
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=8192, min_kv_tokens=8192, causal=True,
         backend="cuda", variant="int8qk-fp8-acc16pv", evidence=SWEEP_SM90),
    Rule(capability=(9, 0), head_dims=(64,), min_q_tokens=8192, min_kv_tokens=8192, causal=False,
         backend="cuda", variant="int8qk-fp8-acc16pv", evidence=SWEEP_SM90),
    Rule(capability=(9, 0), head_dims=(64,), min_q_tokens=16384, min_kv_tokens=16384, causal=True,
         backend="cuda", variant="int8qk-fp8-acc16pv", evidence=SWEEP_SM90),
    # Chosen by hand only (auto's own pick there is above): fp8-acc16 non-causal from 8192 (1.28x /
    # 1.33x at 8k / 16k), fp8 causal from 8192 (1.21-1.42x).
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=8192, min_kv_tokens=8192, causal=False,
         backend="cuda", variant="int8qk-fp8-acc16pv", evidence=SWEEP_SM90),
    Rule(capability=(9, 0), head_dims=(128,), min_q_tokens=8192, min_kv_tokens=8192, causal=True,
         backend="cuda", variant="int8qk-fp8pv", evidence=SWEEP_SM90),
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
