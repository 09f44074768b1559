"""Ours beside the public SageAttention (2.x, built from source) and torch SDPA, in one process on
the same inputs: the comparison issues 10 and 14 ask for.

    python bench/public_sage.py --json bench/results/<date>-<gpu>-public-sage.json

Times, per shape: cuDNN SDPA, SDPA's default, ``comfy_sage.sageattn`` with the cuda backend's two
fast variants (int8qk-fp8pv and int8qk-fp8-acc16pv: the Hopper family on sm_90), and
``sageattention.sageattn`` (what users of
the public package call; on sm_90 it runs its INT8 Q·K + FP8 P·V kernel with fp32+fp32 accumulation).
Quantization is inside every timing (both libraries quantize per call). CUDA events, input sets
rotated past L2, median (``comfy_sage.bench.time_cuda``). Accuracy of both against float32 SDPA on
two heads of the same inputs.

The public package is never vendored: fetch thu-ml/SageAttention, build it for the GPU
(``TORCH_CUDA_ARCH_LIST=9.0 python setup.py build_ext --inplace``) and put it on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from comfy_sage import accuracy, bench, sageattn

SDPA = ("cudnn", "sdpa_default")  # row keys of torch's kernels; every other key is a quantized one
OURS = {"ours": "int8qk-fp8pv", "ours_fp8_acc16": "int8qk-fp8-acc16pv"}  # row key -> cuda variant
MODEL_SHAPES = ((1, 40, 32760, 128), (1, 40, 75600, 128), (1, 24, 118800, 128), (1, 12, 32760, 128),
                (4, 32, 8192, 128), (1, 24, 4608, 128), (2, 10, 4096, 64))
SWEEP = tuple((4, 32, n, d) for d in (64, 128) for n in (1024, 2048, 4096, 8192, 16384, 32768))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--rep-ms", type=float, default=200.0)
    ap.add_argument("--sweep", action="store_true", help="also 4x32x{1k..32k}x{64,128}, causal and not")
    ap.add_argument("--sweep-only", action="store_true", help="the 4x32 sweep without the model shapes")
    args = ap.parse_args(argv)
    try:
        import sageattention
    except ImportError as e:  # its build failed or was not run: the table without it, said in the JSON
        print(f"public SageAttention not importable ({e}): timing without it", flush=True)
        sageattention = None

    from e2e import public_sage_version  # bench/ is on sys.path when this runs as a script

    env = bench.environment(torch.device("cuda"))
    env["command"] = " ".join(["python", "bench/public_sage.py", *(sys.argv[1:] if argv is None else argv)])
    env["sageattention"] = public_sage_version() if sageattention else None
    cases = [] if args.sweep_only else [(s, False) for s in MODEL_SHAPES]
    if args.sweep or args.sweep_only:
        cases += [(s, c) for s in SWEEP for c in (False, True)]
    rows = []
    for (b, h, n, d), causal in cases:
        sets = [tuple(torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                for _ in range(bench._rotation(3 * b * h * n * d * 2, torch.device("cuda")))]

        def cudnn(q, k, v):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        impls = {
            "cudnn": cudnn,
            "sdpa_default": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
            **{name: (lambda q, k, v, var=var: sageattn(q, k, v, is_causal=causal, backend="cuda", variant=var))
               for name, var in OURS.items()},
        }
        if sageattention:
            impls["public_sage"] = lambda q, k, v: sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)
        row = {"shape": [b, h, n, d], "causal": causal, "ms": {}, "accuracy_vs_f32": {}}
        q, k, v = (t[:1, :2].contiguous() for t in sets[0])
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
        for name, fn in impls.items():
            try:
                row["ms"][name] = bench.time_cuda(fn, sets, rep_ms=args.rep_ms)
                if name not in SDPA:
                    e = accuracy.errors(fn(q, k, v), ref)
                    row["accuracy_vs_f32"][name] = {"cos": e.cos, "rel_l1": e.rel_l1}
            except Exception as e:  # noqa: BLE001 - a shape one library does not take is a row entry
                row["ms"][name] = None
                row.setdefault("errors", {})[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        best = min(row["ms"][k] for k in SDPA if row["ms"][k] is not None)
        for name in impls:
            if name not in SDPA and row["ms"][name]:
                row[f"{name}_vs_best_sdpa"] = best / row["ms"][name]
        rows.append(row)
        ms = row["ms"]
        print(f"{b}x{h}x{n}x{d}{' causal' if causal else ''}: cudnn {ms['cudnn']:.3f} default {ms['sdpa_default']:.3f}"
              + "".join(f" {name} {ms[name] or float('nan'):.3f} ({row.get(name + '_vs_best_sdpa', 0):.2f}x)"
                        for name in impls if name not in SDPA), flush=True)
        del sets, q, k, v, ref
        torch.cuda.empty_cache()
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
