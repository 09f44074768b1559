"""Time the CUDA backend's variants (quantization included) against SDPA on the GPU present.

python bench/cuda_bench.py --out bench/results/cuda-<gpu>.json
Shapes sorted by size; inputs rotated (several sets) so L2 does not flatter small shapes;
median of triton.testing.do_bench. FLOPs counted as 4·B·H·Lq·Lk·D (non-causal).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from comfy_sage.accuracy import errors
from comfy_sage.backends import cuda
from comfy_sage.backends.base import Call
from comfy_sage.config import PVMode, QuantConfig, TensorLayout

SHAPES = [(2, 10, 4096, 64), (1, 24, 4608, 128), (1, 40, 32760, 128)]  # SDXL, Flux, Wan 14B 480p
MODES = [PVMode.INT8, PVMode.FP16, PVMode.FP16_ACC16, PVMode.FP8, PVMode.FP8_ACC16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--modes", default=",".join(m.value for m in MODES),
                    help="comma-separated P·V modes (default: all)")
    ap.add_argument("--no-sdpa", action="store_true", help="skip the SDPA baseline rows")
    args = ap.parse_args(argv)
    modes = [PVMode(m) for m in args.modes.split(",")]
    dtype = getattr(torch, args.dtype)
    rows = []
    for B, H, N, D in SHAPES:
        nbytes = 3 * B * H * N * D * 2
        sets = max(1, min(4, int(4 * 60e6 // nbytes) + 1))
        inputs = [tuple(torch.randn(B, H, N, D, device="cuda", dtype=dtype) for _ in range(3)) for _ in range(sets)]
        flops = 4 * B * H * N * N * D
        it = {"i": 0}

        def rotating(fn):
            def f():
                q, k, v = inputs[it["i"] % sets]
                it["i"] += 1
                return fn(q, k, v)
            return f

        ref = None
        if N <= 4608:
            q, k, v = inputs[0]
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        baselines = [] if args.no_sdpa else [("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v))]
        for name, fn in baselines:
            ms = do_bench(rotating(fn), warmup=50, rep=300, return_mode="median")
            row = {"shape": [B, H, N, D], "impl": name, "ms": ms, "tflops": flops / ms / 1e9}
            if ref is not None:
                row["accuracy_vs_fp32"] = errors(fn(*inputs[0]), ref).as_dict()
            rows.append(row)
            print(f"{B}x{H}x{N}x{D} {name:>14}: {ms:8.3f} ms {row['tflops']:7.1f} TFLOPS", flush=True)
        for mode in modes:
            cfg = QuantConfig(pv_mode=mode, tiles=cuda.tiles(mode, D))
            call = Call(TensorLayout.HND, False, 1 / math.sqrt(D), False, cfg, head_dim=D)
            fn = lambda q, k, v, call=call: cuda.BACKEND.run(q, k, v, call)
            ms = do_bench(rotating(fn), warmup=50, rep=300, return_mode="median")
            row = {"shape": [B, H, N, D], "impl": f"cuda:{cfg.variant}", "ms": ms, "tflops": flops / ms / 1e9}
            if ref is not None:
                row["accuracy_vs_fp32"] = errors(fn(*inputs[0]), ref).as_dict()
            rows.append(row)
            print(f"{B}x{H}x{N}x{D} {cfg.variant:>14}: {ms:8.3f} ms {row['tflops']:7.1f} TFLOPS "
                  f"{row.get('accuracy_vs_fp32', {}).get('rel_l1', '')}", flush=True)
        del inputs
        torch.cuda.empty_cache()
    sha = os.environ.get("COMFY_SAGE_GIT_SHA") or subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    meta = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "git_sha": sha,
        "command": "python bench/cuda_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dtype": args.dtype, "times_include_quantization": True, "flops": "4*B*H*N*N*D",
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
