"""The self-test ``install.py`` runs after every build: ``python -m comfy_sage.selftest``.

About ten seconds on a GPU: each variant the built library offers, at head dims 64 and 128,
against the reference backend with the same quantization (the bound of
tests/test_cuda_backend.py); then, per GPU, what ``backend="auto"`` picks for one model
shape and its measured speed against PyTorch's attention. Exit 0 when every kernel matches,
1 when one does not or the library does not load, 3 without a CUDA GPU.
It runs in its own process so that a kernel fault cannot take install.py down with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from typing import Optional

import torch

# Same quantization on both sides, so only summation order, exp2.approx and the final rounding
# differ (tests/test_cuda_backend.py derives the bound): 2e-3 rel-L1 for bf16 outputs.
TIGHT_REL_L1 = 2e-3
SMALL = (1, 2, 256)  # B, H, N: a few hundred microseconds per kernel
MODEL_SHAPE = ("Wan 2.1 1.3B 480p x 81 frames", 1, 12, 32760, 128)


def _rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().sum() / b.abs().sum().clamp_min(1e-30)).item()


def _families(arch: int, pv, head_dim: int) -> list:
    """Every kernel family of the library that runs (pv, head_dim) on ``arch`` ([None]: the
    library's own choice, for a library without families)."""
    from .backends import cuda

    kinds = [f for f in getattr(cuda, "KernelFamily", ()) if f.value != "auto"]
    if not kinds:
        return [None]
    found = []
    for family in kinds:
        try:
            if cuda.resolve_family(pv, head_dim, arch, family) == family:
                found.append(family)
        except cuda.CudaError:  # the library says this family does not run it here
            continue
    return found


def check_kernels(device: torch.device) -> list[dict]:
    """Each cuda variant x kernel family x head dim x (non-causal, causal) against the reference."""
    from . import api, backends, reference
    from .config import VARIANTS

    backend = backends.get("cuda")
    if backend is None:
        return [{"name": "cuda", "ok": False, "detail": backends.why_not("cuda")}]
    offered = backend.variants(device)
    if not offered:
        return [{"name": "cuda", "ok": False, "detail": "the library loads but offers no variant on this GPU"}]
    from .backends import cuda

    arch = cuda._device_arch(device.index)  # what the backend itself asks the library with
    results = []
    gen = torch.Generator(device=device).manual_seed(0)
    for variant in offered:
        pv = VARIANTS[variant][1]
        for head_dim in (64, 128):
            for causal in (False, True):
                b, h, n = SMALL
                q, k, v = (torch.randn(b, h, n, head_dim, device=device, generator=gen).to(torch.bfloat16)
                           for _ in range(3))
                k = k + 0.5  # a common offset: K smoothing must remove it
                name = f"cuda.{variant} D={head_dim}{' causal' if causal else ''}"
                try:
                    p = api.plan(q, k, v, is_causal=causal, backend="cuda", variant=variant)
                    if p.error is not None:  # the backend declines this head dim before launch: not a fault
                        results.append({"name": name, "ok": True, "skipped": True, "detail": f"not offered: {p.error}"})
                        continue
                    families = _families(arch, pv, head_dim)
                except (RuntimeError, ValueError, TypeError) as e:
                    results.append({"name": name, "ok": False, "detail": f"{type(e).__name__}: {e}"})
                    continue
                if not families:
                    results.append({"name": name, "ok": True, "skipped": True, "detail": "no kernel family runs it here"})
                for family in families:
                    label = name if family is None else f"{name} [{family.value}]"
                    try:
                        if family is None:
                            call, out = p.call, api.run(p)
                        else:  # this family's own quantization groups, on both sides
                            cfg = dataclasses.replace(p.call.cfg, tiles=cuda.tiles(pv, head_dim, arch, family))
                            call = dataclasses.replace(p.call, cfg=cfg)
                            out = backend.run(q, k, v, call, family=family)
                        ref = reference.attention(q, k, v, call)
                        torch.cuda.synchronize(device)
                    except (RuntimeError, ValueError, TypeError) as e:
                        results.append({"name": label, "ok": False, "detail": f"{type(e).__name__}: {e}"})
                        continue
                    err = _rel_l1(out, ref)
                    ok = math.isfinite(err) and err <= TIGHT_REL_L1 and bool(torch.isfinite(out).all())
                    results.append({"name": label, "ok": ok, "rel_l1": err,
                                    "detail": f"rel-L1 {err:.1e} vs reference (bound {TIGHT_REL_L1:.0e})"})
    return results


def auto_choice(device: torch.device, rep_ms: float = 200.0) -> dict:
    """What ``backend="auto"`` runs on MODEL_SHAPE, and its time against PyTorch attention."""
    from . import api
    from .bench import time_cuda

    label, b, h, n, d = MODEL_SHAPE
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(b, h, n, d, device=device, generator=gen, dtype=torch.bfloat16) for _ in range(3))
    p = api.plan(q, k, v, backend="auto")
    sdpa = api.plan(q, k, v, backend="sdpa")
    chosen = f"{p.backend}.{p.variant}" if p.backend != "sdpa" else "sdpa (PyTorch attention)"
    api.run(p)  # first call outside the timing (triton compiles here)
    ms = time_cuda(lambda: api.run(p), [()], rep_ms=rep_ms)
    base = time_cuda(lambda: api.run(sdpa), [()], rep_ms=rep_ms) if p.backend != "sdpa" else ms
    return {"shape": f"{label} ({b}x{h}x{n}x{d})", "auto": chosen, "reason": p.reason, "ms": ms, "sdpa_ms": base}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_sage.selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-timing", action="store_true", help="skip the model-shape timing")
    parser.add_argument("--devices", help="comma-separated CUDA device indices (default: all; install.py passes "
                                          "those the library was built for)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("self-test: no CUDA GPU visible to torch, nothing to test")
        return 3
    started = time.perf_counter()
    report, ok = [], True
    seen_arch = set()
    indices = [int(i) for i in args.devices.split(",")] if args.devices else range(torch.cuda.device_count())
    for index in indices:
        device = torch.device("cuda", index)
        cap = torch.cuda.get_device_capability(index)
        gpu = {"index": index, "name": torch.cuda.get_device_name(index), "capability": f"sm_{cap[0]}{cap[1]}"}
        with torch.cuda.device(device):
            if cap not in seen_arch:  # the same kernels on a second identical GPU prove nothing new
                seen_arch.add(cap)
                gpu["kernels"] = check_kernels(device)
                for r in gpu["kernels"]:
                    mark = "skip" if r.get("skipped") else "ok  " if r["ok"] else "FAIL"
                    print(f"  {mark} {r['name']:<40} {r.get('detail') or ''}", flush=True)
                ok = ok and all(r["ok"] for r in gpu["kernels"])
            if not args.no_timing:
                a = auto_choice(device)
                gpu["auto"] = a
                speed = a["sdpa_ms"] / a["ms"] if a["ms"] else float("nan")
                print(f"  GPU {index} ({gpu['name']}, {gpu['capability']}): auto uses {a['auto']} on {a['shape']}: "
                      f"{a['ms']:.2f} ms vs PyTorch attention {a['sdpa_ms']:.2f} ms ({speed:.2f}x)", flush=True)
        report.append(gpu)
    print(f"self-test: {'passed' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ok": ok, "gpus": report}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
