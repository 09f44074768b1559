"""INT8 P·V with and without V smoothing, and a speed check of the cuda kernels (issue 8).

python bench/vsmooth_gpu.py --out OUT.json
Accuracy against float32 attention (SDPA in fp32, TF32 off) at the model shapes of
``comfy_sage.bench.MODEL_SHAPES``, on Gaussian inputs and on biased V (V + a per-channel
offset ~ N(0, 2²), ``accuracy.InputKind.V_BIAS``), bf16 in and out; the reference backend
beside the kernels at the shapes under 8192 tokens. Inputs are drawn on the GPU (the CPU
generator of ``make_inputs`` takes minutes at 75k tokens), one seed per shape. Speed: median
of CUDA-event-timed calls over three rotated input sets, quantization included, per family.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from comfy_sage import reference
from comfy_sage.accuracy import errors, float32_attention
from comfy_sage.backends import cuda
from comfy_sage.bench import MODEL_SHAPES, environment
from comfy_sage.call import Call
from comfy_sage.config import PVMode, QuantConfig, TensorLayout


def inputs(shape, kind: str, seed: int, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    b, h, n, d = shape.batch, shape.heads, shape.tokens, shape.head_dim
    q, k, v = (torch.randn(b, h, n, d, device="cuda", generator=g) for _ in range(3))
    if kind == "v_bias":
        v = v + 2.0 * torch.randn(b, h, 1, d, device="cuda", generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def call_for(pv: PVMode, d: int, smooth_v: bool = True, family="auto") -> Call:
    cfg = QuantConfig(pv_mode=pv, smooth_v=smooth_v, tiles=cuda.tiles(pv, d, family=family))
    return Call(TensorLayout.HND, False, 1 / math.sqrt(d), False, cfg, head_dim=d)


def timed(fn, sets, reps=20) -> float:
    for i in range(3):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(*sets[i % len(sets)])
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-tokens", type=int, default=10**9, help="skip accuracy shapes above this many tokens")
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    rows, speed = [], []
    t0 = time.time()
    for si, shape in enumerate(MODEL_SHAPES):
        if shape.tokens > args.max_tokens:
            continue
        for kind in ("gaussian", "v_bias"):
            q, k, v = inputs(shape, kind, seed=100 + si)
            ref = float32_attention(q, k, v)
            first = len(rows)
            variants = [("cuda.int8qk-int8pv", PVMode.INT8, True), ("cuda.int8qk-int8pv (no V smoothing)", PVMode.INT8, False),
                        ("cuda.int8qk-fp16pv", PVMode.FP16, True)]
            for name, pv, smooth in variants:
                c = call_for(pv, shape.head_dim, smooth)
                out = cuda.BACKEND.run(q, k, v, c)
                rows.append({"shape": shape.name, "dims": shape.label(), "input": kind, "variant": name,
                             **errors(out, ref).as_dict()})
            if shape.tokens < 8192:
                for smooth in (True, False):
                    c = call_for(PVMode.INT8, shape.head_dim, smooth)
                    out = reference.attention(q, k, v, c)
                    rows.append({"shape": shape.name, "dims": shape.label(), "input": kind,
                                 "variant": "reference.int8qk-int8pv" + ("" if smooth else " (no V smoothing)"),
                                 **errors(out, ref).as_dict()})
            rows.append({"shape": shape.name, "dims": shape.label(), "input": kind, "variant": "sdpa (bf16)",
                         **errors(F.scaled_dot_product_attention(q, k, v), ref).as_dict()})
            for r in rows[first:]:
                print(f"{r['dims']:>20} {kind:>8} {r['variant']:>38}: rel-L1 {r['rel_l1']:.5f} cos {r['cos']:.6f}",
                      flush=True)
            del q, k, v, ref
            torch.cuda.empty_cache()
    shape = next(s for s in MODEL_SHAPES if s.name == "wan14b-480p")
    sets = [inputs(shape, "gaussian", seed=7 + i) for i in range(3)]
    for pv in (PVMode.FP16, PVMode.INT8):
        for family in [f for f in cuda.KernelFamily if f is not cuda.KernelFamily.AUTO]:
            try:
                resolved = cuda.resolve_family(pv, 128, cuda._current_arch(), family)
            except cuda.CudaError:
                continue
            for smooth in ((True, False) if pv is PVMode.INT8 else (True,)):
                c = call_for(pv, 128, smooth, family=resolved)
                ms = timed(lambda q, k, v, c=c, f=resolved: cuda.BACKEND.run(q, k, v, c, family=f), sets)
                flops = 4 * shape.batch * shape.heads * shape.tokens ** 2 * shape.head_dim
                speed.append({"dims": shape.label(), "variant": c.cfg.variant, "family": resolved.value,
                              "smooth_v": smooth if pv is PVMode.INT8 else None, "ms": ms, "tflops": flops / ms / 1e9})
                print(f"{shape.label()} {c.cfg.variant} {resolved.value} smooth_v={smooth}: {ms:.2f} ms", flush=True)
    speed.append({"dims": shape.label(), "variant": "sdpa.default", "ms": timed(F.scaled_dot_product_attention, sets)})
    print(f"sdpa.default: {speed[-1]['ms']:.2f} ms; auto families: fp16 {cuda.resolve_family(PVMode.FP16, 128, cuda._current_arch())}, "
          f"int8 {cuda.resolve_family(PVMode.INT8, 128, cuda._current_arch())}; {time.time() - t0:.0f} s")
    result = {"environment": environment(torch.device("cuda")), "accuracy": rows, "speed": speed,
              "notes": "accuracy: vs float32 SDPA, bf16 inputs drawn on the GPU (v_bias: V + N(0, 2^2) per channel); "
                       "speed: median of 20 CUDA-event-timed calls, 3 rotated input sets, quantization included"}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
