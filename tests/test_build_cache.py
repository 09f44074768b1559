"""A damaged native library in the build cache (issue 9 item 1) becomes a reason, never a crash.

Each kind of damage is written into a fake cache entry of a throw-away source tree
(COMFY_SAGE_CSRC / COMFY_SAGE_BUILD_DIR), and every surface that touches the library is
checked: the loader, ``available_backends()``, ``variants()``, ``info``, ``sageattn(backend=
"cuda")`` and the ComfyUI override. On this CPU host the cuda backend's GPU checks are faked
(``torch.cuda.is_available`` and the device's arch) so that the load path is reached.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import comfy_sage
from comfy_sage import backends, build, native
from comfy_sage.backends import cuda

ARCH = 90
FIX = "run python install.py --force"

ABI = getattr(cuda, "ABI_VERSION", 1)  # the version the wrapper accepts


def fake_abi(abi: int, all_symbols: bool) -> str:
    """C source of a stand-in for the real library: cs_abi_version returning ``abi`` and, with
    ``all_symbols``, every other symbol cuda._load looks up (never called by these tests)."""
    lines = ['#define EXPORT __attribute__((visibility("default")))',
             '#ifdef __cplusplus\nextern "C" {\n#endif',
             f"EXPORT int cs_abi_version(void) {{ return {abi}; }}"]
    if all_symbols:
        lines += [f"EXPORT int {name}(void) {{ return 0; }}" for name in cuda._SYMBOLS]
    lines.append("#ifdef __cplusplus\n}\n#endif")
    return "\n".join(lines) + "\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A source tree and an empty build cache, both private to the test."""
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "one.cu").write_text("// stands in for csrc/\n")
    monkeypatch.setenv("COMFY_SAGE_CSRC", str(src))
    monkeypatch.setenv("COMFY_SAGE_BUILD_DIR", str(tmp_path / "_build"))
    build._intact.clear()
    forget()
    yield tmp_path
    forget()
    build._intact.clear()


def entry(cache: Path, content: bytes, recorded: bytes | None = None, archs=(ARCH,), record: dict | None = None,
          name: str = "k") -> Path:
    """A cache entry holding ``content``, its record describing ``recorded`` (default: the same)."""
    recorded = content if recorded is None else recorded
    d = cache / "_build" / f"{name}-sm{'_'.join(map(str, archs))}"
    d.mkdir(parents=True)
    (d / build.LIB_NAME).write_bytes(content)
    rec = {"format": build.RECORD_FORMAT, "hash": build.source_hash(archs), "archs": list(archs),
           "library": build.LIB_NAME, "size": len(recorded), "sha256": hashlib.sha256(recorded).hexdigest()}
    rec.update(record or {})
    (d / build.RECORD_NAME).write_text(json.dumps(rec))
    return d


def compile_fake(tmp: Path, abi: int = ABI, all_symbols: bool = True, compiler: str = "gcc") -> bytes:
    """A real shared library exporting the fake ABI (gcc, or nvcc for a CUDA-built ELF)."""
    src = tmp / ("fake.cu" if compiler == "nvcc" else "fake.c")
    src.write_text(fake_abi(abi, all_symbols))
    out = tmp / f"fake_{abi}_{int(all_symbols)}_{compiler}.so"
    if compiler == "nvcc":
        nvcc = build.find_nvcc()
        if nvcc is None:
            pytest.skip("nvcc not found")
        cmd = [nvcc, "-shared", "-Xcompiler=-fPIC", "-cudart=static", build.gencode(ARCH), str(src), "-o", str(out)]
    else:
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            pytest.skip("no C compiler to build a fake library")
        cmd = [cc, "-shared", "-fPIC", str(src), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make the cuda backend believe an sm_90 GPU is present, so it reaches the loader."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake sm_90 GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(cuda, "_device_arch", lambda index: ARCH)
    yield
    monkeypatch.undo()
    forget()


def forget() -> None:
    """Drop every cached answer about the library (the loader's and the registry's)."""
    cuda._load.cache_clear()
    getattr(backends, "refresh", lambda: None)()


def reason() -> str:
    forget()
    assert cuda._load(ARCH) is None
    return cuda._load_error(ARCH)


# -- the loader, one kind of damage per test ---------------------------------------------------

def test_no_build_says_not_built(cache):
    assert "not built for sm_90" in reason() and "run python install.py" in reason()


def test_empty_file(cache):
    entry(cache, b"", recorded=b"\x7fELF" + b"\0" * 4000)
    assert "is empty" in reason() and FIX in reason()


def test_truncated_file(cache):
    full = b"\x7fELF" + os.urandom(8000)
    entry(cache, full[:3000], recorded=full)
    r = reason()
    assert "3000 bytes, its build recorded 8004 (truncated" in r and FIX in r


def test_same_size_other_bytes(cache):
    entry(cache, b"\x7fELF" + b"\1" * 500, recorded=b"\x7fELF" + b"\2" * 500)
    assert "sha256 does not match" in reason()


def test_garbage_that_matches_its_record_fails_in_dlopen(cache):
    # The record agrees with the file, so only dlopen can find out; its OSError is the reason.
    entry(cache, b"this is not a shared library\n" * 50)
    r = reason()
    assert "does not load" in r and FIX in r


def test_unreadable_record(cache):
    d = entry(cache, b"\x7fELF")
    (d / build.RECORD_NAME).write_text("{not json")
    assert "build record build.json is unreadable" in reason()


def test_record_without_checksum(cache):
    d = entry(cache, b"\x7fELF")
    rec = json.loads((d / build.RECORD_NAME).read_text())
    del rec["sha256"], rec["size"]
    (d / build.RECORD_NAME).write_text(json.dumps(rec))
    assert "no size/sha256" in reason()


def test_missing_library_file(cache):
    d = entry(cache, b"\x7fELF")
    (d / build.LIB_NAME).unlink()
    assert "is missing" in reason()


def test_wrong_abi(cache):
    entry(cache, compile_fake(cache, abi=ABI + 1))
    r = reason()
    assert f"has ABI version {ABI + 1}, this comfy_sage needs {ABI}" in r and FIX in r


def test_missing_symbols(cache):
    entry(cache, compile_fake(cache, all_symbols=False))
    r = reason()
    assert "lacks cs_last_error" in r and "cs_attention" in r and FIX in r


def test_intact_library_loads(cache):
    """The positive control: a complete library of the right ABI passes every check."""
    entry(cache, compile_fake(cache))
    forget()
    lib = cuda._load(ARCH)
    assert lib is not None and lib.cs_abi_version() == ABI


def test_intact_entry_preferred_over_a_damaged_one(cache):
    good = compile_fake(cache)
    entry(cache, good, name="a")
    d = entry(cache, good[:100], recorded=good, name="b")
    os.utime(d, (2e9, 2e9))  # the damaged one is the newest
    assert build.find_library(ARCH) == cache / "_build" / "a-sm90" / build.LIB_NAME


def test_stale_entry_is_not_used(cache):
    entry(cache, compile_fake(cache))
    (Path(os.environ["COMFY_SAGE_CSRC"]) / "one.cu").write_text("// changed\n")
    assert "not built for sm_90 from the current sources" in reason()


def test_truncated_nvcc_library_is_rejected_before_dlopen(cache, monkeypatch):
    """The SIGBUS case: half of a real CUDA shared library. dlopen of it kills the process
    (shown in a subprocess first), so the integrity check must refuse it without mapping it."""
    full = compile_fake(cache, compiler="nvcc")
    truncated = cache / "truncated.so"
    truncated.write_bytes(full[: len(full) // 2])
    probe = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(truncated)!r})"],
                           capture_output=True, text=True)
    assert probe.returncode != 0, "dlopen of the truncated library succeeded: the test lost its point"
    entry(cache, full[: len(full) // 2], recorded=full)

    def no_dlopen(*args, **kwargs):
        raise AssertionError("dlopen reached with a damaged library")

    monkeypatch.setattr(ctypes, "CDLL", no_dlopen)
    r = reason()
    assert "truncated" in r and FIX in r


# -- every public surface reports the reason ---------------------------------------------------

def test_surfaces_report_the_reason(cache, fake_gpu):
    full = b"\x7fELF" + b"\0" * 5000
    entry(cache, full[:10], recorded=full)
    forget()
    why = comfy_sage.available_backends()["cuda"]
    assert "damaged" in why and "truncated" in why and why.endswith(FIX)
    assert cuda.BACKEND.variants(torch.device("cuda", 0)) == []
    assert not any(name.startswith("cuda.") for name in comfy_sage.variants("cpu"))

    from comfy_sage import cli

    assert cli.info()["backends"]["cuda"] == why
    q = torch.randn(1, 2, 64, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="backend='cuda' is not available here: .*" + FIX):
        comfy_sage.sageattn(q, q, q, backend="cuda")
    with pytest.raises(cuda.CudaError, match="truncated"):
        cuda.tiles(arch=ARCH)


def test_override_falls_back(cache, fake_gpu):
    from comfy_sage.comfy.options import PatchConfig
    from comfy_sage.comfy.override import SageAttentionOverride

    entry(cache, b"garbage" * 100)
    forget()
    calls = []

    def host(q, k, v, heads, **kwargs):
        calls.append(heads)
        return torch.zeros(q.shape[0], q.shape[1], q.shape[2])

    fn = SageAttentionOverride(PatchConfig(backend="cuda"))
    q = torch.randn(1, 16, 4 * 64, dtype=torch.bfloat16)
    out = fn(host, q, q, q, 4, transformer_options={}, _inside_attn_wrapper=True)
    assert calls == [4] and out.shape == (1, 16, 256)
    (why,) = fn.stats.total.fallback
    assert "does not load" in why


def test_import_and_info_in_a_fresh_process(cache):
    """`import comfy_sage` and `python -m comfy_sage info` with a damaged cache: no traceback."""
    entry(cache, b"")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "comfy_sage", "info"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_native_load_without_cache_folder(cache):
    loaded = native.load(ARCH, ABI, cuda._SYMBOLS)
    assert loaded.lib is None and "not built" in loaded.reason


def test_record_cannot_point_outside_its_folder(cache):
    elsewhere = cache / "elsewhere.so"
    elsewhere.write_bytes(compile_fake(cache))
    entry(cache, b"\x7fELF", record={"library": str(elsewhere)})
    assert "names a library outside its folder" in reason()


def test_unreadable_cache_folder_is_a_reason(cache, monkeypatch):
    entry(cache, b"\x7fELF")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    r = reason()
    assert "the build cache cannot be read" in r and "Permission denied" in r and FIX in r


@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not found")
def test_a_new_build_removes_builds_of_older_sources(cache):
    old = entry(cache, b"\x7fELF old", record={"hash": "0123456789abcdef"}, name="old")
    in_progress = cache / "_build" / "busy-sm90"  # no record yet: another build may be writing it
    in_progress.mkdir()
    current = entry(cache, b"\x7fELF other compiler", name="other")  # current sources: kept
    result = build.ensure([ARCH], progress=None)
    assert not result.cached and result.lib.exists()
    assert not old.exists() and in_progress.exists() and current.exists()
