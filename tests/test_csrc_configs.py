"""The native library's sources against their one table (csrc/configs.json), on the CPU.

The build compiles exactly the table's configurations from generated instantiation files; the
dispatch point (csrc/abi.cu) reads the generated csrc/instances.h. These tests fail when the
committed generated files drift from the table, when a .cu file is not built, when the ABI's
codes disagree between C and Python, or when an experiment switch or environment read comes
back into the product sources.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from comfy_sage import build
from comfy_sage.backends import cuda
from comfy_sage.config import PVMode

CSRC = build.CSRC


def test_generated_files_match_the_table():
    assert build.stale_generated(CSRC) == [], "run python -m comfy_sage.build --generate"


def test_every_source_is_built_and_exists():
    built = {p.relative_to(CSRC).as_posix() for p in build.sources(CSRC)}
    on_disk = {p.relative_to(CSRC).as_posix() for p in CSRC.rglob("*.cu")}
    assert built <= on_disk, f"listed but missing: {sorted(built - on_disk)}"
    assert on_disk <= built, f"never compiled (add it to configs.json or BASE_SOURCES): {sorted(on_disk - built)}"


def _instantiated(table):
    return [c for c in table["configs"] if build.instantiates(table["families"][c["family"]])]


def test_one_instantiation_per_configuration():
    table = build.kernel_table(CSRC)
    paths = [build.instantiation_path(c, table) for c in _instantiated(table)]
    assert len(paths) == len(set(paths)), "two configurations share an instantiation file"
    for c in _instantiated(table):
        text = (CSRC / build.instantiation_path(c, table)).read_text()
        assert text.count("template cudaError_t") == 1
        assert f"/*D=*/{c['head_dim']}, PV::{build.PV_ENUM[c['pv']]}>" in text


def test_per_file_flags_come_from_the_table():
    flags = build.file_flags(CSRC)
    table = build.kernel_table(CSRC)
    for c in _instantiated(table):
        rel = build.instantiation_path(c, table)
        assert flags.get(rel, ()) == tuple(f"-Xptxas={o}" for o in c.get("ptxas", ()))
        if c.get("ptxas"):
            assert c.get("why"), f"{rel}: a per-file option needs its reason ('why')"


def test_a_new_configuration_is_generated_and_dispatched(tmp_path):
    root = tmp_path / "csrc"
    shutil.copytree(CSRC, root)
    table = json.loads((root / build.CONFIG_TABLE).read_text())
    table["configs"] = [c for c in table["configs"] if not (c["family"] == "w32" and c["head_dim"] == 64)]
    (root / build.CONFIG_TABLE).write_text(json.dumps(table))
    stale = build.stale_generated(root)
    assert "instances.h" in stale and "mma_sync/instantiations/w32_hd64_int8.cu" in stale
    build.generate(root)
    assert build.stale_generated(root) == []
    assert not (root / "mma_sync/instantiations/w32_hd64_int8.cu").exists()
    assert "X(W32, 64," not in (root / "instances.h").read_text()
    assert (root / "mma_sync/instantiations/w16_hd64_int8.cu").exists()


def test_a_family_without_configurations_is_not_dispatched():
    """A family with no configurations (sm90 until the Hopper kernels land) is neither included
    nor in the auto order of instances.h: the library reports it unsupported."""
    table = build.kernel_table(CSRC)
    header = (CSRC / "instances.h").read_text()
    for name, fam in table["families"].items():
        has = any(c["family"] == name for c in table["configs"])
        assert (f"X({name.upper()})" in header) == (has and name in table["auto_order"])
        assert (f"#include \"{fam['declare']}\"" in header) == has or any(
            f2["declare"] == fam["declare"] for n2, f2 in table["families"].items()
            if n2 != name and any(c["family"] == n2 for c in table["configs"]))


def _header_enum(text: str, prefix: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"\b{prefix}(\w+) = (\d+)", text)}


def test_abi_codes_agree_between_c_and_python():
    header = (CSRC / "comfy_sage.h").read_text()
    assert int(re.search(r"#define CS_ABI_VERSION (\d+)", header).group(1)) == cuda.ABI_VERSION
    families = _header_enum(header, "CS_FAMILY_")
    assert families == {f.name: code for f, code in cuda.FAMILY_CODES.items()}
    assert set(build.kernel_table(CSRC)["families"]) == {f.value for f in cuda.KernelFamily} - {"auto"}
    types = (CSRC / "common" / "types.h").read_text()
    pv = dict(re.findall(r"(\w+) = (\d+)", re.search(r"enum class PV : int \{([^}]*)\}", types).group(1)))
    assert {PVMode(k.lower().replace("_", "-")): int(v) for k, v in pv.items()} == cuda.PV_CODES
    fam = dict(re.findall(r"(\w+) = (\d+)", re.search(r"enum class Family : int \{([^}]*)\}", types).group(1)))
    assert {k: int(v) for k, v in fam.items()} == families


@pytest.mark.parametrize("pattern", [r"\bgetenv\b", r"CS_INT8_MIN_CTAS", r"CS_NO_QK_PIPELINE", r"CS_CTA_Q",
                                     r"CS_WARP_Q", r"COMFY_SAGE_CUDA_KERNEL"])
def test_no_experiment_switches_in_the_product_sources(pattern):
    hits = [p.relative_to(CSRC).as_posix() for p in CSRC.rglob("*")
            if p.suffix in (".cu", ".cuh", ".h") and re.search(pattern, p.read_text())]
    assert not hits, f"{pattern} in {hits}: A/B variants live on a branch or in csrc/NOTES.md"
