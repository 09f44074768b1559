"""CI check of the native library's machine code: compile csrc/ for every supported arch with
nvcc (no GPU needed) and read the SASS with cuobjdump (which runs nvdisasm for -sass).

Each configuration of csrc/configs.json, on each arch its family runs on, must use the
tensor-core instructions it was written for (IMMA for the INT8 Q·Kᵀ and INT8 P·V, HMMA for FP16
P·V, the FP8 MMA on sm_89 / sm_120a), and the hot kernels must not touch local memory (no
LDL/STL, no spill in ptxas' report). A kernel that silently turns into scalar code fails here.
Skipped, naming the missing tool, when nvcc, cuobjdump or nvdisasm is absent.
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
TABLE = build.kernel_table()
FP8 = ("fp8", "fp8-acc16")
# The ~100 KB shared-memory arches launch 128-row CTAs of the 16-row kernel; the 64-row one is a
# trap there, never launched (csrc/mma_sync/traits.h small_smem_arch).
SMALL_SMEM_ARCHS = (86, 89, 120)


def _sass_cases():
    """(config, arch) for every configuration of csrc/configs.json and every arch its family runs
    on (FP8 P·V from sm_89: below, the host refuses the variant and the kernel body is a trap)."""
    for c in TABLE["configs"]:
        if not build.instantiates(TABLE["families"][c["family"]]):
            continue  # a family with its own sources checks its own machine code
        for arch in TABLE["families"][c["family"]]["archs"]:
            if arch in ARCHS and not (c["pv"] in FP8 and arch < 89):
                yield pytest.param(c, arch, id=f"{c['family']}-hd{c['head_dim']}-{c['pv']}-sm{arch}")


def _tool(name: str) -> str | None:
    """A CUDA binary tool: on PATH, in the toolkit beside nvcc or under $CUDA_HOME, or from its
    pip wheel (nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm install into site-packages/nvidia/*/bin)."""
    found = shutil.which(name)
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME", ""), os.path.dirname(build.find_nvcc() or "")]
    for site in sys.path:
        roots += glob.glob(os.path.join(site, "nvidia", "*", "bin"))
    for root in roots:
        for cand in (os.path.join(root, name), os.path.join(root, "bin", name)):
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return None


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    if build.find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    tool = _tool("cuobjdump")
    if tool is None:
        pytest.skip("cuobjdump not found: pip install nvidia-cuda-cuobjdump")
    # cuobjdump -sass runs nvdisasm, which the pip wheels ship separately; it looks on PATH.
    nvdisasm = _tool("nvdisasm")
    if nvdisasm is None:
        pytest.skip("nvdisasm not found (cuobjdump -sass runs it): pip install nvidia-cuda-nvdisasm")
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(nvdisasm), os.environ.get("PATH", "")]))
    out = tmp_path_factory.mktemp("sass")
    try:
        build.build(ARCHS, out_dir=out, jobs=os.cpu_count() or 1)
    except RuntimeError as e:
        pytest.fail(f"nvcc build failed:\n{e}")
    return out, tool, env


def _sass(built, obj: Path, arch: int) -> dict[str, str]:
    """SASS text of each kernel (mangled name) in ``obj`` for ``arch``."""
    _, tool, env = built
    suffix = "a" if arch in (90, 120) else ""
    proc = subprocess.run([tool, "-sass", "-arch", f"sm_{arch}{suffix}", str(obj)], capture_output=True, text=True,
                          env=env)
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


def _object(built, rel: str) -> Path:
    obj = built[0] / "obj" / (rel.replace("/", "__") + ".o")
    assert obj.exists(), f"missing object {obj.name}"
    return obj


def _cta_rows(name: str) -> int:
    """CTA rows from a mangled w16_kernel<D, PV, CTA_Q> name."""
    m = re.search(r"Li(\d+)EEEvNS_10AttnParams", name)
    assert m, f"unexpected attention kernel name {name}"
    return int(m.group(1))


@pytest.mark.parametrize("config, arch", list(_sass_cases()))
def test_attention_sass(built, config, arch):
    obj = _object(built, build.instantiation_path(config, TABLE))
    kernels = {n: sass for n, sass in _sass(built, obj, arch).items() if f"{config['family']}_kernel" in n}
    assert kernels, f"no {config['family']} kernel in {obj.name}"
    for name, sass in kernels.items():
        if config["family"] == "w16" and arch in SMALL_SMEM_ARCHS and _cta_rows(name) == 64:
            continue
        _check_attention_sass(sass, arch, config["head_dim"], config["pv"])


def _check_attention_sass(sass: str, arch: int, d: int, pv: str) -> None:
    ops = re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass, re.M)
    mnemonics = set(op.split(".")[0] for op in ops)
    assert "IMMA" in mnemonics, f"sm_{arch} hd{d} {pv}: INT8 Q·Kᵀ did not assemble to IMMA"
    if pv in ("fp16", "fp16-acc16"):
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
    log = (built[0] / "ptxas.log").read_text()
    entries = re.findall(r"Compiling entry function '(\S+)' for '(sm_\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads",
                         log, re.S)
    assert entries, "ptxas -v report missing"
    bad = [(fn, arch, st, ld) for fn, arch, st, ld in entries if (st, ld) != ("0", "0")]
    assert not bad, f"ptxas reported spills: {bad}"


def test_quant_kernels_built(built):
    names = " ".join(_sass(built, _object(built, "quant/quant.cu"), 90))
    for kernel in ("quant_int8_kernel", "v_quant_kernel", "token_partial_sum_kernel", "token_mean_kernel",
                   "v_amax_kernel", "v_to_f16_kernel"):
        assert kernel in names, f"{kernel} missing from quant/quant.cu"
