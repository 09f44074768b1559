"""Where the build's compilers and headers come from (comfy_sage/toolchain.py), with stand-ins:
fake nvcc scripts that print a version, fake site-packages trees laid out like NVIDIA's wheels."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from comfy_sage import build, toolchain

pytestmark = pytest.mark.skipif(os.name == "nt", reason="fake nvcc scripts are POSIX shell")


def fake_nvcc(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nvcc = folder / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {version[:4]}, V{version}'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return nvcc


def wheel_tree(site: Path, nvcc_version: str | None = None, runtime: bool = True) -> Path:
    """site/nvidia/cu13 as the wheels lay it out: bin/nvcc (nvidia-cuda-nvcc), include/ and
    lib/ (nvidia-cuda-runtime)."""
    root = site / "nvidia" / "cu13"
    if nvcc_version:
        fake_nvcc(root / "bin", nvcc_version)
    if runtime:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "cuda_runtime.h").write_text("")
        (root / "lib").mkdir(parents=True, exist_ok=True)
        (root / "lib" / "libcudart_static.a").write_text("")
    return root


@pytest.fixture
def no_cuda(monkeypatch, tmp_path):
    """No CUDA_HOME/CUDA_PATH, an empty PATH (but for a folder of our own), no site-packages."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "path"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [])
    return path


def test_search_order_cuda_home_then_path_then_wheel(no_cuda, tmp_path, monkeypatch):
    site = tmp_path / "site"
    wheel_tree(site, "13.0.88")
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [site])
    found = toolchain.find_nvcc()
    assert found.origin.startswith("pip wheel") and found.version == "13.0.88"

    fake_nvcc(no_cuda, "13.1.5")
    found = toolchain.find_nvcc()
    assert (found.origin, found.version, found.path) == ("PATH", "13.1.5", str(no_cuda / "nvcc"))

    home = tmp_path / "toolkit"
    fake_nvcc(home / "bin", "12.8.93")
    monkeypatch.setenv("CUDA_HOME", str(home))
    found = toolchain.find_nvcc()
    assert (found.origin, found.version) == (f"CUDA_HOME={home}", "12.8.93")


def test_too_old_nvcc_is_passed_over(no_cuda, tmp_path, monkeypatch):
    """nvcc 12.4 on PATH cannot compile the kernels (PTX ISA 8.7): the 13.0 wheel is used instead."""
    fake_nvcc(no_cuda, "12.4.131")
    site = tmp_path / "site"
    wheel_tree(site, "13.0.88")
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [site])
    assert toolchain.find_nvcc().version == "13.0.88"
    assert toolchain.find_nvcc(minimum=None).version == "12.4.131"
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [])
    assert toolchain.find_nvcc() is None


def test_nothing_found(no_cuda):
    assert toolchain.find_nvcc() is None and build.find_nvcc() is None


def test_complete_wheel_tree_needs_only_its_lib_folder(no_cuda, tmp_path, monkeypatch):
    site = tmp_path / "site"
    root = wheel_tree(site, "13.0.88")
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [site])
    found = toolchain.find_nvcc()
    # nvcc.profile searches lib64/; the wheels use lib/
    assert found.compile_flags == () and found.link_flags == (f"-L{root / 'lib'}",)


def test_wheels_split_over_two_site_folders(no_cuda, tmp_path, monkeypatch):
    """nvcc in a venv, torch's nvidia-cuda-runtime in the system site the venv sees: the other
    tree's headers and libraries are added (cuda_runtime.h was not found before)."""
    venv_site, system_site = tmp_path / "venv", tmp_path / "system"
    own = wheel_tree(venv_site, "13.0.88", runtime=False)
    other = wheel_tree(system_site)
    (other / "include" / "cccl").mkdir()
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [venv_site, system_site])
    found = toolchain.find_nvcc()
    assert found.compile_flags == (f"-I{other / 'include'}", "-isystem", str(other / "include" / "cccl"))
    assert found.link_flags == (f"-L{own / 'lib'}", f"-L{other / 'lib'}")


def test_toolkit_wheels_are_pinned_to_one_minor():
    wanted = toolchain.toolkit_wheels("13.0")
    assert "nvidia-cuda-nvcc==13.0.*" in wanted and "nvidia-nvvm==13.0.*" in wanted
    assert all(w.endswith("==13.0.*") for w in wanted)
    assert toolchain.toolkit_wheels("12.8") == []  # no CUDA 12 wheel has an nvcc
    assert toolchain.toolkit_wheels(None) == toolchain.toolkit_wheels("13.0")


def test_a_header_wheel_is_one_line(tmp_path, monkeypatch):
    """A pinned header wheel added to HEADER_WHEELS: missing until installed, then its include
    folder reaches every nvcc command."""
    wheel = toolchain.HeaderWheel("nvidia-cutlass==4.2.0.0", "cutlass_library/source/include")
    monkeypatch.setattr(toolchain, "HEADER_WHEELS", (wheel,))
    site = tmp_path / "site"
    monkeypatch.setattr(toolchain, "_site_dirs", lambda: [site])
    versions = {}
    monkeypatch.setattr(toolchain, "_dist_version", lambda name: versions.get(name))
    assert toolchain.missing_header_wheels() == ["nvidia-cutlass==4.2.0.0"]
    assert toolchain.header_include_dirs() == []

    (site / wheel.include).mkdir(parents=True)
    versions["nvidia-cutlass"] = "4.2.0.0"
    assert toolchain.missing_header_wheels() == []
    assert toolchain.header_include_dirs() == [site / wheel.include]
    versions["nvidia-cutlass"] = "4.1.0"  # another version installed: the pin asks for its own
    assert toolchain.missing_header_wheels() == ["nvidia-cutlass==4.2.0.0"]

    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        raise OSError("not running nvcc in this test")

    monkeypatch.setattr(build.subprocess, "run", fake_run)
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "a.cu").write_text("")
    build._compile("nvcc", src / "a.cu", tmp_path / "a.o", [90], src)
    assert f"-I{site / wheel.include}" in seen["cmd"]


def test_host_compiler_hint_names_a_package():
    hint = toolchain.host_compiler_hint()
    assert "g++" in hint or "Visual Studio" in hint or "macOS" in hint
