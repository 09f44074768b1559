"""Development harness of the Hopper kernel family (csrc/sm90/): build, check, time, on an H200.

    python bench/sm90_bench.py build   [--out DIR]   # nvcc -> /tmp/b/libsm90.so, ptxas report, SASS counts
    python bench/sm90_bench.py test    [--out DIR]   # odd shapes vs float32 and vs the reference (same quantization)
    python bench/sm90_bench.py time    [--out DIR]   # median of CUDA-event timings, quantization included, beside SDPA
    python bench/sm90_bench.py sanitize              # one small call, for compute-sanitizer

The library is built from csrc/sm90/*.cu alone (its own extern "C" entry, cs_sm90_attention), so this
runs before the family is wired into the package's dispatch point. Results go to DIR/sm90-<phase>.json.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from comfy_sage.bench import git_sha  # noqa: E402  (the package of this tree, not an installed one)
BUILD = Path(os.environ.get("SM90_BUILD", "/tmp/b"))
LIB = BUILD / "libsm90.so"
FLAGS = ["-gencode=arch=compute_90a,code=sm_90a", "-O3", "-std=c++17", "--use_fast_math", "-lineinfo",
         "-Xptxas=-v,--warn-on-spills", "-Xcompiler=-fPIC", "-Xcompiler=-fvisibility=hidden", "-shared",
         "-cudart=static"]
GRAN = {"per_thread": 0, "per_warp": 1, "per_block": 2}
# SM90_PV=fp16 runs the accurate mode, fp8-acc16 FP8 P·V with f16 block tiles (csrc/common/types.h PV codes)
PV_NAME = os.environ.get("SM90_PV", "fp8")
PV_CODE = {"fp16": 0, "fp8": 1, "fp8-acc16": 2}[PV_NAME]


def meta() -> dict:
    import torch
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha() or "unknown",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "extra_defines": os.environ.get("SM90_DEFINES", ""),
        "pv": PV_NAME,
    }


def build(out: Path) -> dict:
    BUILD.mkdir(parents=True, exist_ok=True)
    defines = [f"-D{d}" for d in os.environ.get("SM90_DEFINES", "").split() if d]
    src = Path(os.environ.get("SM90_SRC", ROOT / "csrc"))  # another tree's csrc: an A/B against a snapshot
    cmd = ["nvcc", *FLAGS, *defines, f"-I{src}", str(src / "sm90/sm90.cu"), "-o", str(LIB)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    res = {"cmd": " ".join(cmd), "rc": proc.returncode, "seconds": round(time.time() - t0, 1)}
    log = proc.stdout + proc.stderr
    (out / "sm90-ptxas.txt").write_text(log)
    if proc.returncode:
        print(log[-3000:])
        return res
    kernels = {}
    cur = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            cur = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and cur:
            kernels.setdefault(cur, {})["spill"] = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and cur:
            kernels.setdefault(cur, {})["regs"] = int(m.group(1))
    res["ptxas"] = kernels
    res["warnings"] = [l for l in log.splitlines() if "arning" in l or "C75" in l]
    sass = subprocess.run(["cuobjdump", "-sass", str(LIB)], capture_output=True, text=True).stdout
    counts, cur = {}, None
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1)
            counts[cur] = {"IGMMA": 0, "QGMMA": 0, "HGMMA": 0, "IMMA": 0, "HMMA": 0, "LDL": 0, "STL": 0}
        elif cur:
            for op in counts[cur]:
                if re.search(rf"\b{op}\b", line):
                    counts[cur][op] += 1
    res["sass"] = {k: v for k, v in counts.items() if "attn" in k}
    print(json.dumps({k: res[k] for k in ("rc", "seconds", "ptxas", "warnings", "sass")}, indent=1)[:4000])
    return res


class Lib:
    def __init__(self):
        self.lib = ctypes.CDLL(str(LIB))
        self.lib.cs_sm90_workspace_bytes.restype = ctypes.c_size_t
        self.lib.cs_sm90_workspace_bytes.argtypes = [ctypes.c_int] * 8
        self.lib.cs_sm90_attention.restype = ctypes.c_int
        self.err = ctypes.create_string_buffer(512)
        self.ws = None

    def __call__(self, q, k, v, layout="HND", causal=False, lse=False, gran="per_thread", smooth_k=True, out=None):
        import torch
        if layout == "HND":
            B, Hq, Lq, D = q.shape
            Hkv, Lk = k.shape[1], k.shape[2]
            st = lambda t: (t.stride(0), t.stride(1), t.stride(2))
        else:
            B, Lq, Hq, D = q.shape
            Hkv, Lk = k.shape[2], k.shape[1]
            st = lambda t: (t.stride(0), t.stride(2), t.stride(1))
        o = torch.empty_like(q) if out is None else out
        lse_t = torch.empty(B, Hq, Lq, device=q.device, dtype=torch.float32) if lse else None
        nbytes = self.lib.cs_sm90_workspace_bytes(B, Hq, Hkv, Lq, Lk, D, int(lse), PV_CODE)
        if self.ws is None or self.ws.numel() < nbytes:
            self.ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
        arr = lambda t: (ctypes.c_int64 * 3)(*st(t))
        rc = self.lib.cs_sm90_attention(
            ctypes.c_void_p(q.data_ptr()), ctypes.c_void_p(k.data_ptr()), ctypes.c_void_p(v.data_ptr()),
            ctypes.c_void_p(o.data_ptr()), ctypes.c_void_p(lse_t.data_ptr() if lse else 0),
            ctypes.c_int(1 if q.dtype == torch.bfloat16 else 0), B, Hq, Hkv, Lq, Lk, D,
            arr(q), arr(k), arr(v), arr(o), GRAN[gran], int(smooth_k), int(causal),
            ctypes.c_float(1.0 / math.sqrt(D)), ctypes.c_void_p(self.ws.data_ptr()), ctypes.c_size_t(self.ws.numel()),
            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), self.err, ctypes.c_size_t(512), PV_CODE)
        if rc:
            raise RuntimeError(f"cs_sm90_attention rc={rc}: {self.err.value.decode()}")
        return (o, lse_t) if lse else o


def ref_f32(q, k, v, layout, causal):
    """float32 attention (top-left causal, GQA by repetition), in q's layout, plus natural-log lse."""
    import torch
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k, v = q.float(), k.float(), v.float()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        i = torch.arange(q.shape[2], device=q.device)[:, None]
        j = torch.arange(k.shape[2], device=q.device)[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    lse = torch.logsumexp(s, -1)
    o = torch.softmax(s, -1) @ v
    return (o.transpose(1, 2) if layout == "NHD" else o), lse


def metrics(out, ref):
    o, r = out.float().flatten(), ref.float().flatten()
    return {"cos": float(torch_cos(o, r)), "rel_l1": float((o - r).abs().sum() / r.abs().sum()),
            "max_abs": float((o - r).abs().max())}


def torch_cos(a, b):
    import torch
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0)


TEST_CASES = [
    # B, Hq, Hkv, Lq, Lk, D, causal, layout, dtype, lse, gran
    (1, 2, 2, 1000, 1000, 128, False, "HND", "bf16", False, "per_thread"),
    (1, 2, 2, 777, 77, 128, False, "NHD", "fp16", False, "per_thread"),
    (2, 4, 2, 300, 512, 64, False, "HND", "bf16", True, "per_thread"),
    (1, 2, 2, 1000, 1000, 128, True, "HND", "bf16", True, "per_thread"),
    (1, 3, 1, 513, 513, 64, True, "NHD", "bf16", True, "per_thread"),
    (1, 1, 1, 1, 1, 128, False, "HND", "bf16", True, "per_thread"),
    (1, 2, 2, 130, 700, 128, True, "HND", "fp16", False, "per_warp"),
    (1, 2, 2, 1024, 1024, 64, False, "HND", "bf16", False, "per_block"),
    (2, 8, 8, 2048, 2048, 128, False, "NHD", "bf16", True, "per_thread"),
    (1, 4, 4, 4096, 4096, 128, False, "HND", "bf16", False, "per_thread"),
]


def key_block(lib: "Lib") -> int:
    """The built library's key block for this P·V mode (csrc/sm90/params.h key_block): K scale block =
    softmax block = the reference's blk_k."""
    ask = getattr(lib.lib, "cs_sm90_key_block", None)
    return ask(PV_CODE) if ask is not None else 128  # snapshots before the per-mode tiles: 128 keys


def test(out: Path) -> dict:
    import torch
    import comfy_sage
    from comfy_sage.config import Tiles
    lib = Lib()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}
    results = []
    torch.manual_seed(0)
    for case in TEST_CASES:
        B, Hq, Hkv, Lq, Lk, D, causal, layout, dtype, want_lse, gran = case
        shp = lambda h, n: (B, h, n, D) if layout == "HND" else (B, n, h, D)
        q = torch.randn(shp(Hq, Lq), device="cuda", dtype=dt[dtype])
        k = torch.randn(shp(Hkv, Lk), device="cuda", dtype=dt[dtype])
        v = torch.randn(shp(Hkv, Lk), device="cuda", dtype=dt[dtype])
        o = torch.full_like(q, float("nan"))
        res = lib(q, k, v, layout, causal, want_lse, gran, out=o)
        torch.cuda.synchronize()
        o, lse = res if want_lse else (res, None)
        rec = {"case": case, "finite": bool(torch.isfinite(o).all())}
        ref, ref_lse = ref_f32(q, k, v, layout, causal)
        rec["vs_f32"] = metrics(o, ref)
        try:
            r = comfy_sage.sageattn(q, k, v, tensor_layout=layout, is_causal=causal, return_lse=want_lse,
                                    backend="reference", variant=f"int8qk-{PV_NAME}pv", qk_granularity=gran,
                                    tiles=Tiles(blk_q=128, warp_q=16, blk_k=key_block(lib)))
            rq, rq_lse = r if want_lse else (r, None)
            rec["vs_ref"] = metrics(o, rq)
            if want_lse:
                rec["lse_vs_ref_max_abs"] = float((lse - rq_lse).abs().max())
        except Exception as e:  # the harness records, the tests assert
            rec["vs_ref_error"] = repr(e)[:300]
        if want_lse:
            rec["lse_vs_f32_max_abs"] = float((lse - ref_lse).abs().max())
        results.append(rec)
        print(case, {k: v for k, v in rec.items() if k != "case"})
    return {"tests": results}


TIME_SHAPES = [  # B, H, N, D
    (1, 40, 32760, 128), (1, 12, 32760, 128), (4, 32, 8192, 128), (1, 24, 4608, 128), (2, 10, 4096, 64),
    (1, 40, 75600, 128), (1, 24, 118800, 128),
    (2, 40, 32760, 128),  # Wan 14B 480p as ComfyUI calls it: cond and uncond in one batch
]


def bench_ms(fn, reps=10, warm=3):
    import torch
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2], ts


def randn_qkv(B, H, N, D, layout):
    """Three bf16 Gaussian tensors of (B, H, N, D) in ``layout``; NHD is how ComfyUI hands them over."""
    import torch
    shape = (B, H, N, D) if layout == "HND" else (B, N, H, D)
    return [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]


def timing(out: Path, shapes, causal_too=False, sdpa=True, layout="HND") -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    lib = Lib()
    rows = []
    for (B, H, N, D) in shapes:
        for causal in ([False, True] if causal_too else [False]):
            torch.manual_seed(1)
            q, k, v = randn_qkv(B, H, N, D, layout)
            flops = 4 * B * H * N * N * D / (2 if causal else 1)
            ours, ours_all = bench_ms(lambda: lib(q, k, v, layout, causal))
            if layout == "NHD":  # SDPA and the accuracy slice below take (B, H, N, D) views
                q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            cud = dflt = float("nan")
            if sdpa:
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    cud, _ = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                dflt, _ = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
            # accuracy on a slice of heads (float32 reference of the full shape is slow)
            hs = min(H, 2)
            o = lib(q[:, :hs].contiguous(), k[:, :hs].contiguous(), v[:, :hs].contiguous(), "HND", causal)
            qs_, ks_, vs_ = (t[:1, :hs].float() for t in (q, k, v))
            ref = F.scaled_dot_product_attention(qs_, ks_, vs_, is_causal=causal)
            acc = metrics(o[:1], ref)
            row = {"shape": [B, H, N, D], "layout": layout, "causal": causal, "ours_ms": round(ours, 4),
                   "ours_all_ms": [round(t, 4) for t in ours_all], "cudnn_ms": round(cud, 4),
                   "sdpa_default_ms": round(dflt, 4), "ours_tops": round(flops / ours / 1e9, 1),
                   "speedup_vs_cudnn": round(cud / ours, 3), "speedup_vs_best_sdpa": round(min(cud, dflt) / ours, 3),
                   "accuracy_vs_f32": acc}
            rows.append(row)
            print(f"{B}x{H}x{N}x{D} causal={causal}: ours {ours:.3f} ms ({row['ours_tops']} TOPS), cudnn {cud:.3f}, "
                  f"default {dflt:.3f}, x{row['speedup_vs_cudnn']}, rel_l1 {acc['rel_l1']:.4f} cos {acc['cos']:.5f}",
                  flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    return {"timing": rows}


def kernels(shapes, reps=10, layout="HND") -> dict:
    """Where one call's time goes: each kernel's median device time (torch.profiler), per shape."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    lib = Lib()
    rows = []
    for (B, H, N, D) in shapes:
        torch.manual_seed(1)
        q, k, v = randn_qkv(B, H, N, D, layout)
        for _ in range(3):
            lib(q, k, v, layout)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                lib(q, k, v, layout)
            torch.cuda.synchronize()
        per = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per.setdefault(e.name.split("<")[0].split("(")[0], []).append(e.device_time_total / 1e3)
        med = {n: sorted(t)[len(t) // 2] for n, t in per.items()}
        row = {"shape": [B, H, N, D], "layout": layout, "kernel_ms": {n: round(t, 4) for n, t in med.items()},
               "launches_per_call": {n: len(t) / reps for n, t in per.items()}}
        rows.append(row)
        print(f"{B}x{H}x{N}x{D}:", ", ".join(f"{n} {t:.4f}" for n, t in med.items()), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    return {"kernels": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["build", "test", "time", "kernels", "sanitize", "profile"])
    ap.add_argument("--no-sdpa", action="store_true", help="time ours only (A/B builds)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default="all", help="all | small | comma list of indices into TIME_SHAPES")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--layout", choices=["HND", "NHD"], default="HND", help="of the inputs (time, kernels)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"meta": meta(), "phase": a.phase}
    shapes = TIME_SHAPES if a.shapes == "all" else [TIME_SHAPES[int(i)] for i in a.shapes.split(",")]
    if a.phase == "build":
        res.update(build(out))
    elif a.phase == "test":
        res.update(test(out))
    elif a.phase == "time":
        res.update(timing(out, shapes, a.causal, not a.no_sdpa, a.layout))
    elif a.phase == "kernels":
        res.update(kernels(shapes, layout=a.layout))
    elif a.phase == "profile":  # one warm call of 1x40x8192x128 for ncu (--launch-skip past the warm-up)
        import torch
        lib = Lib()
        q, k, v = (torch.randn(1, 40, 8192, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for _ in range(2):
            lib(q, k, v)
        torch.cuda.synchronize()
        return
    elif a.phase == "sanitize":
        import torch
        lib = Lib()
        for causal in (False, True):
            q, k, v = (torch.randn(1, 2, 300, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            lib(q, k, v, "HND", causal, True)
            q, k, v = (torch.randn(1, 200, 2, 64, device="cuda", dtype=torch.float16) for _ in range(3))
            lib(q, k, v, "NHD", causal, False)
        torch.cuda.synchronize()
        print("sanitize run done")
        return
    (out / f"sm90-{a.phase}{a.tag}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
