"""CI check of the native library's machine code: compile csrc/ for every supported arch with
nvcc (no GPU needed) and read the SASS with cuobjdump.

Each attention variant must use the tensor-core instructions it was written for (IMMA for the
INT8 Q·Kᵀ and INT8 P·V, HMMA for FP16 P·V, the FP8 MMA on sm_89 / sm_120a), and the hot
kernels must not touch local memory (no LDL/STL, no spill in ptxas' report). A kernel that
silently turns into scalar code fails here. Skipped (with the reason) when nvcc is absent.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_sage import build

ARCHS = build.SUPPORTED_ARCHS
PV_FILES = {"fp16": "fp16", "fp16acc16": "fp16-acc16", "fp8": "fp8", "fp8acc16": "fp8-acc16", "int8": "int8"}
FP8 = ("fp8", "fp8acc16")


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME", ""), os.path.dirname(shutil.which("nvcc") or "")]
    for site in sys.path:
        roots += glob.glob(os.path.join(site, "nvidia", "*", "bin"))
        roots += glob.glob(os.path.join(site, "nvidia", "cuda_cuobjdump", "bin"))
    for root in roots:
        for cand in (os.path.join(root, "cuobjdump"), os.path.join(root, "bin", "cuobjdump")):
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return None


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    if build.find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found: pip install nvidia-cuda-cuobjdump")
    out = tmp_path_factory.mktemp("sass")
    try:
        build.build(ARCHS, out_dir=out, jobs=os.cpu_count() or 1)
    except RuntimeError as e:
        pytest.fail(f"nvcc build failed:\n{e}")
    return out, tool


def _sass(tool: str, obj: Path, arch: int) -> dict[str, str]:
    """SASS text of each kernel (mangled name) in ``obj`` for ``arch``."""
    suffix = "a" if arch in (90, 120) else ""
    proc = subprocess.run([tool, "-sass", "-arch", f"sm_{arch}{suffix}", str(obj)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    kernels: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            kernels[current] = ""
        elif current:
            kernels[current] += line + "\n"
    return kernels


def _attn_kernels(kernels: dict[str, str]) -> dict[str, str]:
    """The attention kernels of one instantiation file: 64-row and 128-row CTAs of 16-row warps."""
    found = {n: sass for n, sass in kernels.items() if "attn_kernel" in n}
    assert len(found) == 2, f"expected 2 attention kernels (CTA rows 64, 128), found {list(found)}"
    return found


def _cta_rows(name: str) -> int:
    """CTA rows from a mangled attn_kernel<D, PV, CTA_Q> name."""
    m = re.search(r"Li(\d+)EEEvNS_10AttnParams", name)
    assert m, f"unexpected attention kernel name {name}"
    return int(m.group(1))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("pv", list(PV_FILES))
def test_attention_sass(built, arch, d, pv):
    if pv in FP8 and arch < 89:
        pytest.skip("FP8 P·V needs sm_89+: on this arch the kernel body is a trap (host refuses the variant)")
    out, tool = built
    obj = out / "obj" / f"instantiations__attn_hd{d}_{pv}.cu.o"
    assert obj.exists(), f"missing object {obj.name}"
    for name, sass in _attn_kernels(_sass(tool, obj, arch)).items():
        # 64-row CTAs on the ~100 KB shared-memory arches are a trap, never launched (attn_kernel.cuh)
        if arch in (86, 89, 120) and _cta_rows(name) == 64:
            continue
        _check_attention_sass(sass, arch, d, pv)


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("pv", ["fp16", "int8"])
def test_w32_sass(built, d, pv):
    """The 32-row-warp kernel (attn_w32.cuh): the real thing on sm_90a, a trap elsewhere."""
    out, tool = built
    obj = out / "obj" / f"instantiations__attn_w32_hd{d}_{pv}.cu.o"
    assert obj.exists(), f"missing object {obj.name}"
    for arch in ARCHS:
        found = {n: sass for n, sass in _sass(tool, obj, arch).items() if "attn_w32_kernel" in n}
        assert len(found) == 1, f"sm_{arch}: expected one 32-row-warp kernel, found {list(found)}"
        if arch == 90:
            _check_attention_sass(next(iter(found.values())), arch, d, pv)


def _check_attention_sass(sass: str, arch: int, d: int, pv: str) -> None:
    ops = re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass, re.M)
    mnemonics = set(op.split(".")[0] for op in ops)
    assert "IMMA" in mnemonics, f"sm_{arch} hd{d} {pv}: INT8 Q·Kᵀ did not assemble to IMMA"
    if pv in ("fp16", "fp16acc16"):
        assert "HMMA" in mnemonics, f"sm_{arch} hd{d} {pv}: FP16 P·V did not assemble to HMMA"
    if pv == "int8":
        imma = [op for op in ops if op.startswith("IMMA")]
        assert any("U8" in op for op in imma), f"sm_{arch} hd{d}: no u8·s8 IMMA for P·V: {set(imma)}"
    if pv in FP8 and arch in (89, 120):
        fp8 = [op for op in ops if "E4M3" in op and "MMA" in op]
        assert fp8, f"sm_{arch} hd{d} {pv}: no native FP8 MMA (QMMA/…E4M3) in SASS"
    if pv in FP8 and arch == 90:
        assert "HMMA" in mnemonics, "sm_90a: FP8 mma.sync should lower to HMMA"
    assert not ({"LDL", "STL"} & mnemonics), f"sm_{arch} hd{d} {pv}: local memory (spills) in the hot kernel"


def test_no_spills_reported(built):
    out, _ = built
    log = (out / "ptxas.log").read_text()
    entries = re.findall(r"Compiling entry function '(\S+)' for '(sm_\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads",
                         log, re.S)
    assert entries, "ptxas -v report missing"
    bad = [(fn, arch, st, ld) for fn, arch, st, ld in entries if (st, ld) != ("0", "0")]
    assert not bad, f"ptxas reported spills: {bad}"


def test_quant_kernels_built(built):
    out, tool = built
    names = " ".join(_sass(tool, out / "obj" / "quant_kernels.cu.o", 90))
    for kernel in ("quant_int8_kernel", "v_quant_kernel", "k_partial_sum_kernel", "v_to_f16_kernel"):
        assert kernel in names, f"{kernel} missing from quant_kernels.cu"
