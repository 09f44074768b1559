"""CPU emulation: what accumulating FP8 P·V straight into O (FA3's schedule) would cost in accuracy,
against SageAttention2's two-level accumulation (a fresh tile per 128-key block, folded in fp32).

    python bench/fp8_accum_emulation.py

Model of the FP8 wgmma accumulator: each k32 instruction adds its (exact) products to the
accumulator and the sum keeps 13 mantissa bits, rounded toward zero (SageAttention2's "FP22"
finding; DeepSeek-V3 reports ~14 bits for H800 FP8 GEMMs). P and V in e4m3 as the kernel has them
(P scaled by 448, V per channel), online softmax per 128 keys, Gaussian inputs, float64 reference.
Recorded in csrc/sm90/NOTES.md (v6, next steps).
"""

import math

import torch


def trunc(x: torch.Tensor, bits: int = 13) -> torch.Tensor:
    m, e = torch.frexp(x)  # x = m * 2^e, 0.5 <= |m| < 1
    scale = 2.0 ** (bits + 1)
    return torch.ldexp(torch.trunc(m * scale) / scale, e)


def fp8(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float8_e4m3fn).to(torch.float64)


def main(lq: int = 128, lk: int = 32768, d: int = 128, blk: int = 128) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(n, d, dtype=torch.float64) for n in (lq, lk, lk))
    s = (q @ k.T) / math.sqrt(d)
    ref = torch.softmax(s, -1) @ v
    vs = v.abs().amax(0) / 448
    v8 = fp8(v / vs)
    for mode in ("exact", "two-level", "direct"):
        m = torch.full((lq, 1), -math.inf, dtype=torch.float64)
        l = torch.zeros(lq, 1, dtype=torch.float64)
        o = torch.zeros(lq, d, dtype=torch.float64)
        for st in range(0, lk, blk):
            sb = s[:, st:st + blk]
            mn = torch.maximum(m, sb.amax(-1, keepdim=True))
            a = torch.exp(m - mn)
            p = torch.exp(sb - mn) * 448
            p8 = fp8(p)
            l = l * a + p.sum(-1, keepdim=True)
            if mode == "exact":
                o = o * a + p8 @ v8[st:st + blk]
            elif mode == "two-level":
                fresh = torch.zeros_like(o)
                for c in range(0, blk, 32):
                    fresh = trunc(fresh + p8[:, c:c + 32] @ v8[st + c:st + c + 32])
                o = o * a + fresh
            else:
                o = trunc(o * a)
                for c in range(0, blk, 32):
                    o = trunc(o + p8[:, c:c + 32] @ v8[st + c:st + c + 32])
            m = mn
        out = o * vs / l
        print(f"{mode:10s} rel-L1 vs float64: {float((out - ref).abs().sum() / ref.abs().sum()):.4f}")


if __name__ == "__main__":
    main()
