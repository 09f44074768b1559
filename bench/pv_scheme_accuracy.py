"""CPU: the reference's error against float32 for each P·V scheme and key block the Hopper family
runs (or could), on the same Gaussian inputs — whether fp8-acc16 on 192-key blocks costs accuracy
against fp8 on 128.

    python bench/pv_scheme_accuracy.py --shape 1,2,8192,128 --seed 1 --out bench/results/<file>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comfy_sage import reference  # noqa: E402
from comfy_sage.accuracy import errors  # noqa: E402
from comfy_sage.bench import git_sha  # noqa: E402
from comfy_sage.call import Call  # noqa: E402
from comfy_sage.config import PVMode, QKGranularity, QKQuant, QuantConfig, TensorLayout, Tiles  # noqa: E402

SCHEMES = [(PVMode.FP8, 128), (PVMode.FP8_ACC16, 192), (PVMode.FP8_ACC16, 64), (PVMode.FP16, 192), (PVMode.FP16, 128)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1,2,8192,128", help="B,H,N,D")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    B, H, N, D = (int(x) for x in a.shape.split(","))
    torch.manual_seed(a.seed)
    q, k, v = (torch.randn(B, H, N, D, dtype=torch.bfloat16) for _ in range(3))
    exact_cfg = QuantConfig(qk_quant=QKQuant.NONE, pv_mode=PVMode.NONE)
    exact = reference.attention(q, k, v, Call(TensorLayout.HND, False, 1 / math.sqrt(D), False, exact_cfg, head_dim=D))
    rows = []
    for pv, blk in SCHEMES:
        cfg = QuantConfig(qk_quant=QKQuant.INT8, granularity=QKGranularity.PER_THREAD, pv_mode=pv, smooth_k=True,
                          tiles=Tiles(blk_q=128, warp_q=16, blk_k=blk))
        out = reference.attention(q, k, v, Call(TensorLayout.HND, False, 1 / math.sqrt(D), False, cfg, head_dim=D))
        e = errors(out.to(torch.bfloat16), exact.float())  # bf16 output, as the kernels write it
        rows.append({"pv": pv.value, "blk_k": blk, "cos": e.cos, "rel_l1": e.rel_l1, "max_abs": e.max_abs})
        print(rows[-1], flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha(),
            "device": "cpu", "torch": torch.__version__, "shape": [B, H, N, D], "seed": a.seed, "input": "gaussian bf16",
            "command": " ".join(sys.argv)}
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
