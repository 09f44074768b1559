"""Build the native library (csrc/) with nvcc: ``python -m comfy_sage.build [--arch 80,86,89,90,120]``.

Compiles each .cu file of csrc/ in parallel for the requested arches (default: the GPUs
present), links one shared library, and caches it under ``comfy_sage/_build/<key>/`` where
the key hashes the sources, the flags and the arch list. A failed build prints nvcc's own
error lines and returns non-zero; nothing else in the package depends on it succeeding.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
BUILD_DIR = Path(__file__).resolve().parent / "_build"
LIB_NAME = "libcomfy_sage_cuda.so"
SUPPORTED_ARCHS = (80, 86, 89, 90, 120)

# Every compile flag lives here (STYLE.md rule 8). --use_fast_math is safe: the quantization
# code rounds with explicit __fdiv_rn / __float2int_rn, the attention kernel wants ex2.approx.
NVCC_FLAGS = (
    "-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "-Xptxas=-v,--warn-on-spills",
    "-Xcompiler=-fPIC", "-Xcompiler=-fvisibility=hidden",
)
LINK_FLAGS = ("-shared", "-cudart=static")
# Additions for single files of csrc/, each with its reason.
FILE_FLAGS = {
    # At ptxas -O3 the 32-row-warp FP16 P·V kernel at head dim 128 spilled 16 B (four loop
    # invariants reloaded per block); at -O1 it does not and runs as fast (H200, 1x40x32760x128:
    # 464.6 TFLOPS at -O1, 461.8 at -O3; bench/results/cuda-h200-v5-ab.json, csrc/NOTES.md v5).
    # (INT8 P·V stays at -O3: spill-free there, and 4-5% slower at -O1.)
    "instantiations/attn_w32_hd128_fp16.cu": ("-Xptxas=-O1",),
}


def gencode(arch: int) -> str:
    """nvcc target for an arch: sm_90 and sm_120 use their arch-specific ('a') variants."""
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"arch: expected one of {','.join(map(str, SUPPORTED_ARCHS))}, got {arch}")
    suffix = "a" if arch in (90, 120) else ""
    return f"-gencode=arch=compute_{arch}{suffix},code=sm_{arch}{suffix}"


def find_nvcc() -> Optional[str]:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def sources() -> list[Path]:
    return sorted(p for p in CSRC.rglob("*.cu"))


def source_hash(archs: Sequence[int]) -> str:
    h = hashlib.sha256()
    for p in sorted(CSRC.rglob("*")):
        if p.suffix in (".cu", ".cuh", ".h"):
            h.update(str(p.relative_to(CSRC)).encode())
            h.update(p.read_bytes())
    h.update(" ".join(NVCC_FLAGS + LINK_FLAGS).encode())
    h.update(json.dumps(FILE_FLAGS, sort_keys=True).encode())
    h.update(",".join(map(str, sorted(archs))).encode())
    return h.hexdigest()[:16]


def build_dir(archs: Sequence[int]) -> Path:
    return BUILD_DIR / f"{source_hash(archs)}-sm{'_'.join(map(str, sorted(archs)))}"


def detect_archs() -> list[int]:
    """Arches of the GPUs present (via torch when it has CUDA, else nvidia-smi)."""
    found: set[int] = set()
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                found.add(major * 10 + minor)
    except ImportError:
        pass
    if not found and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True)
        for line in out.stdout.split():
            try:
                major, minor = line.strip().split(".")
                found.add(int(major) * 10 + int(minor))
            except ValueError:
                continue
    # Map to the nearest compiled target below (e.g. 87 -> 86, 100 -> 90 is not binary
    # compatible, so only exact or same-major matches are used).
    result = set()
    for a in found:
        same_major = [s for s in SUPPORTED_ARCHS if s // 10 == a // 10 and s <= a]
        if same_major:
            result.add(max(same_major))
    return sorted(result)


def find_library(arch: Optional[int] = None) -> Optional[Path]:
    """The cached library built from the current sources that covers ``arch`` (any if None)."""
    if not BUILD_DIR.is_dir():
        return None
    candidates = []
    for d in BUILD_DIR.iterdir():
        meta = d / "build.json"
        lib = d / LIB_NAME
        if not (meta.exists() and lib.exists()):
            continue
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        archs = info.get("archs", [])
        if info.get("hash") != source_hash(archs):
            continue  # stale: the sources changed since
        if arch is None or arch in archs:
            candidates.append((lib.stat().st_mtime, lib))
    return max(candidates)[1] if candidates else None


def _compile(nvcc: str, src: Path, obj: Path, archs: Sequence[int]) -> tuple[Path, int, str]:
    extra = FILE_FLAGS.get(src.relative_to(CSRC).as_posix(), ())
    cmd = [nvcc, *NVCC_FLAGS, *extra, *(gencode(a) for a in archs), f"-DCS_ARCHS=\"{','.join(map(str, archs))}\"",
           "-I", str(CSRC), "-c", str(src), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return src, proc.returncode, proc.stdout + proc.stderr


def build(archs: Sequence[int], jobs: int = 0, force: bool = False, out_dir: Optional[Path] = None,
          verbose: bool = False) -> Path:
    """Build (or reuse) the library for ``archs``; returns its path. Raises RuntimeError with
    nvcc's error lines on failure."""
    archs = sorted(set(int(a) for a in archs))
    for a in archs:
        gencode(a)  # validates
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set CUDA_HOME or put nvcc on PATH")
    out = Path(out_dir) if out_dir else build_dir(archs)
    lib = out / LIB_NAME
    if lib.exists() and (out / "build.json").exists() and not force:
        return lib
    obj_dir = out / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    srcs = sources()
    jobs = jobs or os.cpu_count() or 1
    logs: dict[str, str] = {}
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(_compile, nvcc, s, obj_dir / (s.relative_to(CSRC).as_posix().replace("/", "__") + ".o"), archs)
                for s in srcs]
        for fut in concurrent.futures.as_completed(futs):
            src, rc, log = fut.result()
            logs[src.relative_to(CSRC).as_posix()] = log
            if verbose:
                print(f"[comfy_sage.build] {src.name}: rc={rc}", flush=True)
            if rc != 0:
                lines = [l for l in log.splitlines() if "error" in l.lower() or l.startswith(" ")]
                errors.append(f"{src.relative_to(CSRC)}:\n" + "\n".join(lines or log.splitlines()[-20:]))
    (out / "ptxas.log").write_text("".join(f"==> {k}\n{v}\n" for k, v in sorted(logs.items())))
    if errors:
        raise RuntimeError("nvcc failed:\n" + "\n".join(errors))
    objs = sorted(obj_dir.glob("*.o"))
    tmp = out / (LIB_NAME + ".tmp")
    cmd = [nvcc, *LINK_FLAGS, *(gencode(a) for a in archs), *map(str, objs), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("link failed:\n" + proc.stdout + proc.stderr)
    os.replace(tmp, lib)
    (out / "build.json").write_text(json.dumps({"hash": source_hash(archs), "archs": archs, "nvcc": nvcc}, indent=1))
    return lib


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_sage.build", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help="comma-separated list from 80,86,89,90,120 (default: GPUs present)")
    parser.add_argument("--jobs", type=int, default=0, help="parallel nvcc processes (default: CPU count)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a cached build exists")
    parser.add_argument("--out", help="build directory (default: comfy_sage/_build/<hash>-sm<archs>)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        archs = [int(a) for a in args.arch.split(",")] if args.arch else detect_archs()
    except ValueError:
        print(f"[comfy_sage.build] --arch: expected comma-separated integers, got {args.arch!r}", file=sys.stderr)
        return 2
    if not archs:
        print("[comfy_sage.build] no supported NVIDIA GPU found; pass --arch 80,86,89,90,120", file=sys.stderr)
        return 2
    try:
        lib = build(archs, jobs=args.jobs, force=args.force, out_dir=Path(args.out) if args.out else None,
                    verbose=args.verbose)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"[comfy_sage.build] build failed for sm {','.join(map(str, archs))}:\n{e}", file=sys.stderr)
        return 1
    print(f"[comfy_sage.build] {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
