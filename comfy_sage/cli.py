"""The command line: ``python -m comfy_sage bench|info`` (also the ``comfy-sage`` script)."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Optional

import torch

from . import __version__, bench
from .accuracy import InputKind
from .backends import available_backends
from .variants import variants


def info() -> dict:
    """GPU, compute capability, versions, and each backend's availability."""
    data = {
        "comfy_sage": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": None,
        "backends": available_backends(),
    }
    if torch.cuda.is_available():
        data["gpu"] = torch.cuda.get_device_name()
        data["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability())
    else:
        data["gpu_reason"] = "no CUDA device visible to torch" + (
            "" if torch.version.cuda else " (this torch is a CPU build)")
    return data


def _print_info(data: dict) -> None:
    print(f"comfy_sage {data['comfy_sage']}  torch {data['torch']}  CUDA {data['cuda'] or '-'}")
    if data["gpu"]:
        print(f"GPU: {data['gpu']} ({data['capability']})")
    else:
        print(f"GPU: none: {data['gpu_reason']}")
    print("backends:")
    for name, reason in data["backends"].items():
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="comfy-sage", description="comfy-sage quantized attention")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="GPU, versions, available backends").add_argument(
        "--json", action="store_true", help="print JSON instead of text")
    b = sub.add_parser("bench", help="time and check every backend on model shapes")
    b.add_argument("--shape", action="append", default=[], metavar="B,H,N,D[,causal]",
                   help="an extra shape (repeatable); with --only-shapes, the only ones")
    b.add_argument("--only-shapes", action="store_true", help="run only the --shape shapes")
    b.add_argument("--variants", default=None, metavar="GLOB",
                   help="comma-separated globs over variant names, e.g. 'sdpa.*,cuda.*' ('*': every variant; "
                        "default: the variants the Sage Attention node offers, and every SDPA kernel)")
    b.add_argument("--input", default=InputKind.GAUSSIAN.value, choices=[k.value for k in InputKind],
                   help="input distribution")
    b.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    b.add_argument("--slow-max-tokens", type=int, default=8192,
                   help="skip the reference emulation and SDPA's math kernel (both materialize the scores) "
                        "above this many tokens")
    b.add_argument("--rep-ms", type=float, default=500.0, help="timed milliseconds per variant")
    b.add_argument("--json", metavar="PATH", help="write the results and the environment as JSON")
    args = parser.parse_args(argv)

    if args.command == "info":
        data = info()
        print(json.dumps(data, indent=2)) if args.json else _print_info(data)
        return 0

    try:
        extra = [bench.parse_shape(s) for s in args.shape]
    except ValueError as e:
        parser.error(str(e))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.only_shapes and not extra:
        parser.error("--only-shapes needs at least one --shape")
    defaults = () if args.only_shapes else (bench.MODEL_SHAPES if cuda else bench.CPU_SHAPES)
    shapes = list(defaults) + extra
    if args.variants is None:
        select = bench.node_variant
    else:
        globs = [g.strip() for g in args.variants.split(",") if g.strip()]

        def select(name: str) -> bool:
            return any(fnmatch.fnmatch(name, g) for g in globs)

    runnable = sorted(variants(device))
    if not any(select(name) for name in runnable):
        parser.error(f"--variants: {args.variants!r} matches no variant runnable here; runnable: {', '.join(runnable)}")
    if args.json:
        try:  # fail now, not after the whole run
            with open(args.json, "a"):
                pass
        except OSError as e:
            parser.error(f"--json: cannot write {args.json!r}: {e.strerror or e}")
    if not cuda:
        print("No CUDA GPU: timing needs an NVIDIA GPU. Accuracy of the reference backend "
              "(the numerics of each kernel variant) against float32 on small shapes:")
    rows = bench.run(shapes, device, dtype=getattr(torch, args.dtype), kind=InputKind(args.input),
                     select=select, slow_max_tokens=args.slow_max_tokens, rep_ms=args.rep_ms)
    print(bench.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": bench.environment(device), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
