"""Launch-configuration sweep of the triton backend's attention kernel (GPU machine).

For each configuration: a correctness check against the reference with the same
quantization on a small problem, then the median time of the whole op (quantization
included) on model shapes. Writes JSON; the chosen configuration per P·V mode goes
into comfy_sage/backends/triton.py (LAUNCH, TILES) by hand, with this file's JSON as evidence.

    python bench/triton_tune.py --out tune.json
"""

import argparse
import itertools
import json
import math

import torch

from comfy_sage import reference
from comfy_sage.accuracy import errors, make_inputs
from comfy_sage.backends import triton as tb
from comfy_sage.backends.base import Call
from comfy_sage.bench import MODEL_SHAPES, environment, time_cuda
from comfy_sage.config import QuantConfig, TensorLayout, Tiles

SHAPES = [s for s in MODEL_SHAPES if s.name in ("flux-1024", "wan14b-480p")]


def op(q, k, v, pv, blk_k):
    return tb.triton_attention(q, k, v, False, False, 1 / math.sqrt(q.shape[-1]), False, pv, "per_thread", True,
                               128, 32, blk_k)[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = []
    configs = list(itertools.product([64, 128], [(128, 8, 2), (128, 8, 3), (128, 4, 3), (64, 4, 3), (64, 4, 4)],
                                     [False, True]))
    small = make_inputs("k_bias", 1, 4, 1000, 128, dtype=torch.bfloat16, device="cuda", seed=1)
    for block_n, (block_m, warps, stages), ws in configs:
        for mode in tb.LAUNCH.values():
            mode.update(BLOCK_M=block_m, num_warps=warps, num_stages=stages, WARP_SPECIALIZE=ws)
        row = {"BLOCK_N": block_n, "BLOCK_M": block_m, "num_warps": warps, "num_stages": stages, "ws": ws}
        try:
            for pv in ("fp8", "fp16"):
                cfg = QuantConfig(pv_mode=pv, tiles=Tiles(128, 32, block_n))
                ref = reference.attention(*small, Call(TensorLayout.HND, False, 1 / math.sqrt(128), False, cfg))
                row[f"{pv}_err_vs_ref"] = errors(op(*small, pv, block_n), ref).rel_l1
                for shape in SHAPES:
                    qkv = make_inputs("gaussian", shape.batch, shape.heads, shape.tokens, shape.head_dim,
                                      dtype=torch.bfloat16, device="cuda")
                    ms = time_cuda(lambda a, b, c: op(a, b, c, pv, block_n), [qkv], warmup_ms=50, rep_ms=300)
                    row[f"{pv}_{shape.name}_ms"] = ms
                    row[f"{pv}_{shape.name}_tflops"] = shape.flops / ms / 1e9
        except Exception as e:  # a configuration the compiler rejects is a result, not a crash
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump({"environment": environment(torch.device("cuda")), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
