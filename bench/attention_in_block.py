"""Attention timed alone and inside a loop shaped like a Wan 2.1 14B block, with the SM clock.

    python bench/attention_in_block.py --json OUT.json [--tokens 32760] [--batch 2] [--iters 40]

Why: the end-to-end step (bench/e2e.py) saw our attention at 1.50x the host's where the kernel
benchmark gives 1.62x at the same shape. This separates the causes: the same call timed back to
back (as the kernel benchmarks do) and between the block's bf16 GEMMs (as a sampling step runs
it), for our node's path (comfy_sage.sageattn, backend auto, NHD views of (B, L, H*D) as ComfyUI
hands them over) and the host's (SDPA on transposed views, its output reshaped back, as ComfyUI's
attention_pytorch does), with nvidia-smi's SM clock and power sampled during each phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import comfy_sage  # noqa: E402
from comfy_sage.bench import environment  # noqa: E402

HEADS, HEAD_DIM, FFN = 40, 128, 13824  # Wan 2.1 14B


class ClockSampler:
    """nvidia-smi's SM clock (MHz) and power (W) every 50 ms, stamped with perf_counter."""

    def __init__(self):
        self.samples: list[tuple[float, float, float]] = []
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits", "-lms", "50"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                clock, power = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), clock, power))

    def between(self, t0: float, t1: float) -> dict:
        inside = [(c, p) for t, c, p in self.samples if t0 <= t <= t1]
        if not inside:
            return {"sm_clock_mhz": None, "power_w": None, "samples": 0}
        return {"sm_clock_mhz": statistics.median(c for c, _ in inside),
                "power_w": statistics.median(p for _, p in inside), "samples": len(inside)}

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--tokens", type=int, default=32760, help="Wan 14B 480p x 81: 32760")
    ap.add_argument("--batch", type=int, default=2, help="cond and uncond in one call, as ComfyUI batches them")
    ap.add_argument("--iters", type=int, default=40, help="blocks per phase (a Wan 14B step has 40)")
    a = ap.parse_args(argv)
    B, N, H, D = a.batch, a.tokens, HEADS, HEAD_DIM
    dim = H * D
    torch.manual_seed(0)
    dev = torch.device("cuda")
    x = torch.randn(B * N, dim, device=dev, dtype=torch.bfloat16)
    # Separate q, k, v projections: identical q and k would put every row's maximum on its own key.
    wq, wk, wv, wo = (torch.randn(dim, dim, device=dev, dtype=torch.bfloat16) / dim**0.5 for _ in range(4))
    w1 = torch.randn(dim, FFN, device=dev, dtype=torch.bfloat16) / dim**0.5
    w2 = torch.randn(FFN, dim, device=dev, dtype=torch.bfloat16) / FFN**0.5

    def ours(q, k, v):
        return comfy_sage.sageattn(q, k, v, tensor_layout="NHD").reshape(B, N, dim)

    def host(q, k, v):
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return o.transpose(1, 2).reshape(B, N, dim)

    def phase(attn, iters: int, gemms: bool) -> list:
        events = []
        for i in range(iters):
            if gemms or i == 0:  # a block's projections before its attention, its output and FFN after
                q, k, v = ((x @ w).view(B, N, H, D) for w in (wq, wk, wv))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            o = attn(q, k, v)
            end.record()
            events.append((start, end))
            if gemms:
                y = o.view(B * N, dim) @ wo
                F.gelu(y @ w1, approximate="tanh") @ w2
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]

    sampler = ClockSampler()
    rows = {}
    for name, attn in (("ours", ours), ("host", host)):
        phase(attn, 3, True)  # warm-up: planning, allocator, clocks
        for label, gemms in (("alone", False), ("in_block", True)):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            ms = phase(attn, a.iters, gemms)
            t1 = time.perf_counter()
            rows[f"{name}_{label}"] = {"median_ms": statistics.median(ms), "min_ms": min(ms),
                                       "first_half_ms": statistics.median(ms[: len(ms) // 2]),
                                       "second_half_ms": statistics.median(ms[len(ms) // 2:]),
                                       **sampler.between(t0, t1)}
            print(name, label, rows[f"{name}_{label}"], flush=True)
    sampler.stop()
    ratio = {label: rows[f"host_{label}"]["median_ms"] / rows[f"ours_{label}"]["median_ms"]
             for label in ("alone", "in_block")}
    print("host/ours:", ratio, flush=True)
    env = environment(dev)
    env["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    result = {"environment": env, "shape_BNHD": [B, N, H, D], "iters": a.iters, "phases": rows,
              "speedup_vs_host": ratio}
    Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
