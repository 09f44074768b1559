"""CI check of the Hopper family's machine code (csrc/sm90/, its own sources in csrc/configs.json):
compile sm90/sm90.cu for sm_90a with nvcc (no GPU needed) and read ptxas' report and the SASS.

The attention kernels must run Q·Kᵀ on IGMMA (int8 wgmma) and P·V on QGMMA (fp8 wgmma) or HGMMA (f16
wgmma, the accurate mode), not on mma.sync (IMMA/HMMA); nothing may touch local memory (no spill in ptxas' report, no LDL/STL);
and ptxas must not have serialized the wgmma pipeline (its C7510-C7515 notes: a register of an
in-flight wgmma touched by other instructions makes it wait after every wgmma: C7513 appeared
once during development, csrc/sm90/NOTES.md v2).
Skipped, naming the missing tool, when nvcc, cuobjdump or nvdisasm is absent.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from comfy_sage import build
from tests.test_sass import _tool

pytestmark = pytest.mark.slow
SOURCE = build.csrc_root() / "sm90" / "sm90.cu"
# Keys per main-loop step by P·V mode (params.h key_block): the Q·Kᵀ wgmma is m64 x that.
_TILE = re.search(r"key_block\(PV mode\) \{ return mode == PV::FP8 \? (\d+) : (\d+); \}",
                  (SOURCE.parent / "params.h").read_text())
BLOCK_N = {"fp8": int(_TILE.group(1)), "fp8-acc16": int(_TILE.group(2)), "fp16": int(_TILE.group(2))}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    nvcc = build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    cuobjdump, nvdisasm = _tool("cuobjdump"), _tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        pytest.skip("cuobjdump/nvdisasm not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    out = tmp_path_factory.mktemp("sm90") / "sm90.cubin"
    cmd = [nvcc, build.gencode(90), "-cubin", "-O3", "-std=c++17", "--use_fast_math", "-Xptxas=-v,--warn-on-spills",
           f"-I{build.csrc_root()}", str(SOURCE), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(nvdisasm), os.environ.get("PATH", "")]))
    sass = subprocess.run([cuobjdump, "-sass", str(out)], capture_output=True, text=True, env=env)
    assert sass.returncode == 0, sass.stderr
    kernels, cur = {}, None
    for line in sass.stdout.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1)
            kernels[cur] = ""
        elif cur:
            kernels[cur] += line + "\n"
    return proc.stdout + proc.stderr, kernels


# PV codes in the kernels' mangled names (csrc/common/types.h): FP16 0, FP8 1, FP8_ACC16 2.
@pytest.mark.parametrize("pv,code,pv_op", [("fp8", 1, "QGMMA.64x{d}x32.F32.E4M3.E4M3"),
                                           ("fp8-acc16", 2, "QGMMA.64x{d}x32.F16.E4M3.E4M3"),
                                           ("fp16", 0, "HGMMA.64x{d}x16.F32")], ids=lambda x: str(x))
@pytest.mark.parametrize("d", [64, 128])
def test_attention_kernel_uses_wgmma(compiled, d, pv, code, pv_op):
    _, kernels = compiled
    found = [s for n, s in kernels.items() if "attn_sm90_kernel" in n and f"ILi{d}ELNS_2PVE{code}E" in n]
    assert len(found) == 1, list(kernels)
    sass = found[0]
    assert re.search(rf"\bIGMMA\.64x{BLOCK_N[pv]}x32\.S8\.S8\b", sass), "Q·Kᵀ is not on int8 wgmma"
    assert re.search(r"\b" + re.escape(pv_op.format(d=d)) + r"\b", sass), f"P·V ({pv}) is not on wgmma"
    for op in ("IMMA", "HMMA", "LDL", "STL"):
        assert not re.search(rf"\b{op}\b", sass), f"{op} in the sm90 attention kernel"


def test_no_spill_and_no_serialized_wgmma(compiled):
    log, kernels = compiled
    assert not re.search(r"[1-9]\d* bytes spill (stores|loads)", log), log
    assert "C751" not in log, [line for line in log.splitlines() if "C751" in line]
    for name, sass in kernels.items():  # the quantization passes too
        assert not re.search(r"\b(LDL|STL)\b", sass), f"local memory in {name}"
