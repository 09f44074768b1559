"""torch's own scaled_dot_product_attention: the baseline, and the fallback.

It takes the caller's tensors as they are (any head dim, float32 too) and the mask from the call.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..call import Call, from_hnd, to_hnd

KERNELS = {
    "default": None,  # torch's own choice
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
_CUDA_ONLY = ("flash", "efficient", "cudnn")


class SdpaBackend:
    name = "sdpa"

    def availability(self) -> Optional[str]:
        return None

    def variants(self, device: torch.device) -> list[str]:
        if torch.device(device).type == "cuda":
            return list(KERNELS)
        return [k for k in KERNELS if k not in _CUDA_ONLY]

    def tiles(self, cfg, head_dim: int, device: torch.device):
        return cfg.tiles

    def unsupported(self, q, k, v, call: Call) -> Optional[str]:
        if call.variant and call.variant not in self.variants(q.device):
            return f"SDPA kernel {call.variant!r} does not run on {q.device.type}"
        return None

    def run(self, q, k, v, call: Call):
        qh, kh, vh = to_hnd(q, call.layout), to_hnd(k, call.layout), to_hnd(v, call.layout)
        kernel = KERNELS.get(call.variant or "default")
        mask = call.attn_mask
        gqa = qh.shape[1] != kh.shape[1]
        if kernel is None:
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=call.is_causal,
                                                 scale=call.sm_scale, enable_gqa=gqa)
        else:
            with sdpa_kernel(kernel):
                out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=call.is_causal,
                                                     scale=call.sm_scale, enable_gqa=gqa)
        out = from_hnd(out, call.layout)
        if not call.return_lse:
            return out
        return out, logsumexp(qh, kh, call.sm_scale, call.is_causal, mask)


def logsumexp(q, k, sm_scale: float, is_causal: bool, attn_mask=None, chunk: int = 4096) -> torch.Tensor:
    """(B, Hq, Lq) float32 log-sum-exp of the scores, over query chunks to bound memory."""
    group = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1) if group > 1 else k.float()
    out = []
    for start in range(0, q.shape[2], chunk):
        s = (q[:, :, start:start + chunk].float() @ kf.transpose(-1, -2)) * sm_scale
        if attn_mask is not None:
            mask = attn_mask[..., start:start + chunk, :] if attn_mask.shape[-2] > 1 else attn_mask
            s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.float()
        if is_causal:
            q_pos = torch.arange(start, start + s.shape[2], device=q.device).view(-1, 1)
            s = s.masked_fill(torch.arange(k.shape[2], device=q.device).view(1, -1) > q_pos, float("-inf"))
        out.append(torch.logsumexp(s, dim=-1))
    return torch.cat(out, dim=-1)


BACKEND = SdpaBackend()
