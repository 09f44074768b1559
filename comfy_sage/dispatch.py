"""How ``backend="auto"`` chooses: a table of measured wins, SDPA everywhere else.

A rule may only be added with a committed benchmark (``evidence``) showing that its
variant beats every SDPA kernel for that shape class on that architecture, with the
accuracy gate met. With no rule matching, auto uses SDPA: never slower than the host.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class Rule:
    capability: tuple[int, int]  # torch.cuda.get_device_capability()
    head_dims: tuple[int, ...]  # padded head dims the rule covers
    min_q_tokens: int  # the win was measured from this query length up
    min_kv_tokens: int
    backend: str
    variant: str
    evidence: str  # bench/results/<file>.json


RULES: tuple[Rule, ...] = ()


def choose(q: torch.Tensor, k: torch.Tensor, head_dim: int, tokens_q: int, tokens_kv: int) -> Optional[Rule]:
    """The first rule that covers this call on q's device, or None (then: SDPA)."""
    if q.device.type != "cuda":
        return None
    capability = torch.cuda.get_device_capability(q.device)
    for rule in RULES:
        if (
            rule.capability == capability
            and head_dim in rule.head_dims
            and tokens_q >= rule.min_q_tokens
            and tokens_kv >= rule.min_kv_tokens
        ):
            return rule
    return None
