"""install.py as ComfyUI-Manager and users run it (issue 13), on a machine without a GPU.

Builds use a tiny source tree (COMFY_SAGE_CSRC: two .cu files exporting the ABI version) and a
private cache (COMFY_SAGE_BUILD_DIR), so each takes seconds with the machine's nvcc; the real
csrc/ build for sm_90 is the `slow` test. Exit codes are install.py's documented ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "install.py"
READY, NO_TORCH, NO_NVCC, NO_HOST_COMPILER, BUILD_FAILED, NOT_BUILT = 0, 3, 5, 6, 7, 9

TINY = {
    "abi.cu": '#include <cuda_runtime.h>\n'
              'extern "C" __attribute__((visibility("default"))) int cs_abi_version(void) { return 1; }\n'
              '__global__ void first(float* x) { if (x) x[threadIdx.x] = 1.f; }\n',
    "kernels/second.cu": '#include <cuda_fp16.h>\n'
                         '__global__ void second(__half* x) { if (x) x[threadIdx.x] = __float2half(2.f); }\n',
}

# The tiny library is no real kernel library: on a GPU host its self-test would rightly fail.
NO_SELFTEST = ("--no-self-test",) if torch.cuda.is_available() else ()

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"),
                                reason="nvcc not found (PATH or CUDA_HOME)")
no_gpu_only = pytest.mark.skipif(torch.cuda.is_available(),
                                 reason="checks the behaviour on a machine without an NVIDIA GPU")


def run_install(*args, env=None, python=sys.executable, timeout=900):
    """install.py the way ComfyUI-Manager runs it: cwd = the node folder, no terminal input."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([python, str(INSTALL), *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def out(res) -> str:
    return res.stdout + res.stderr


@pytest.fixture
def tiny(tmp_path):
    """A two-file source tree and a private build cache; env for install.py."""
    src = tmp_path / "csrc"
    for rel, text in TINY.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return {"COMFY_SAGE_CSRC": str(src), "COMFY_SAGE_BUILD_DIR": str(tmp_path / "cache")}


def hidden_nvcc_env(extra=None) -> dict:
    """PATH without any CUDA toolkit, no CUDA_HOME/CUDA_PATH (g++ stays reachable in /usr/bin)."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "nvcc").exists())
    env = {"PATH": path, "CUDA_HOME": "", "CUDA_PATH": ""}
    env.update(extra or {})
    return env


def make_venv(path: Path, system_site_packages: bool) -> str:
    venv.EnvBuilder(system_site_packages=system_site_packages, with_pip=False).create(path)
    return str(path / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


# -- fresh environments -------------------------------------------------------------------------

def test_without_torch_says_so_without_a_traceback(tmp_path):
    python = make_venv(tmp_path / "venv", system_site_packages=False)
    res = run_install(python=python)
    assert res.returncode == NO_TORCH, out(res)
    assert "torch is not installed in this Python" in res.stdout and "the Python that runs ComfyUI" in res.stdout
    assert "Traceback" not in out(res)


@no_gpu_only
def test_fresh_venv_without_gpu_reports_and_exits_0(tmp_path):
    # ComfyUI's Python has torch: a fresh venv that sees it (system site packages) stands in for it.
    python = make_venv(tmp_path / "venv", system_site_packages=True)
    res = run_install(python=python)
    text = out(res)
    assert res.returncode == READY, text
    assert "requirements: none beyond ComfyUI's own" in text
    assert "no NVIDIA GPU" in text and "the node uses ComfyUI's attention" in text
    assert "FAILED" not in text and "compiling" not in text and "Traceback" not in text
    # the report comes once, after the work
    assert text.count("comfy-sage environment") == 1
    assert text.index("requirements:") < text.index("comfy-sage environment")
    for key in ("OS:", "Python:", "torch:", "GPU:", "nvcc:", "host compiler:", "backend sdpa:"):
        assert key in text


def test_bad_arch_is_a_usage_error():
    res = run_install("--arch", "75")
    assert res.returncode == 2 and "--arch: expected a comma-separated list from 80,86,89,90,120" in out(res)


# -- building, the cache, repair ---------------------------------------------------------------

@pytest.mark.slow  # three builds and three more runs: 1-3 minutes on two cores
@needs_nvcc
def test_arch_build_cache_hit_force_and_repair(tiny):
    res = run_install("--arch", "90", *NO_SELFTEST, env=tiny)
    text = out(res)
    assert res.returncode == READY, text
    assert "compiling 2 files for sm_90 with nvcc" in text
    progress = [line for line in text.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all(line.rstrip().endswith(" s") for line in progress), progress
    if not torch.cuda.is_available():
        assert any(line.split() == ["self-test:", "skipped:", "no", "GPU", "here"] for line in text.splitlines())
    (entry,) = Path(tiny["COMFY_SAGE_BUILD_DIR"]).iterdir()
    record = json.loads((entry / "build.json").read_text())
    lib = entry / record["library"]
    assert record["archs"] == [90] and record["size"] == lib.stat().st_size and len(record["sha256"]) == 64
    assert record["nvcc_version"] and record["host_compiler"]

    again = run_install("--arch", "90", *NO_SELFTEST, env=tiny)
    assert again.returncode == READY and "cache hit: " in out(again) and "compiling" not in out(again), out(again)

    forced = run_install("--arch", "90", "--force", *NO_SELFTEST, env=tiny)
    assert forced.returncode == READY and "compiling 2 files" in out(forced) and "cache hit" not in out(forced)

    # A truncated library in the cache: --check says so (exit 9), a plain run rebuilds it.
    lib.write_bytes(lib.read_bytes()[:1000])
    check = run_install("--arch", "90", "--check", *NO_SELFTEST, env=tiny)
    assert check.returncode == NOT_BUILT and "damaged" in out(check) and "truncated" in out(check), out(check)
    repaired = run_install("--arch", "90", *NO_SELFTEST, env=tiny)
    assert repaired.returncode == READY, out(repaired)
    assert "is damaged (the library file is 1000 bytes" in out(repaired) and "rebuilding" in out(repaired)
    assert json.loads((entry / "build.json").read_text())["size"] == lib.stat().st_size

    ok = run_install("--arch", "90", "--check", *NO_SELFTEST, env=tiny)
    assert ok.returncode == READY and "intact" in out(ok), out(ok)

    # The compiler gone (toolkit uninstalled): the intact build still serves, nothing is fetched.
    gone = run_install("--arch", "90", "--no-download", *NO_SELFTEST, env=hidden_nvcc_env(tiny))
    assert gone.returncode == READY and "which is not on this machine now" in out(gone), out(gone)


@needs_nvcc
def test_broken_source_gives_compiler_lines_and_exit_7(tiny):
    broken = Path(tiny["COMFY_SAGE_CSRC"]) / "kernels" / "second.cu"
    broken.write_text(broken.read_text() + "\nint broken() { return undefined_thing; }\n")
    res = run_install("--arch", "90", *NO_SELFTEST, env=tiny)
    text = out(res)
    assert res.returncode == BUILD_FAILED, text
    assert 'identifier "undefined_thing" is undefined' in text  # nvcc's own line
    assert "kernels/second.cu" in text and "FAILED" in text
    assert "versions: nvcc 13" in text or "versions: nvcc" in text
    assert "fix: " in text and "the pack still works without the cuda kernels" in text
    assert "Traceback" not in text
    probe = subprocess.run([sys.executable, "-c", "import comfy_sage; print(comfy_sage.available_backends()['sdpa'])"],
                           cwd=ROOT, env={**os.environ, **tiny}, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0 and probe.stdout.strip() == "None", probe.stderr


@needs_nvcc
def test_no_host_compiler_says_what_to_install(tiny, tmp_path):
    # PATH holds nvcc and nothing else: no g++ for it to drive.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvcc").symlink_to(shutil.which("nvcc") or Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    res = run_install("--arch", "90", env={**tiny, "PATH": str(bin_dir), "CUDA_HOME": "", "CUDA_PATH": "",
                                           "CUDAHOSTCXX": ""})
    text = out(res)
    assert res.returncode == NO_HOST_COMPILER, text
    assert "no host C++ compiler" in text and "fix: install g++" in text and "compiling" not in text


@pytest.mark.slow
@needs_nvcc
def test_broken_real_source_stops_early(tmp_path):
    """A copy of csrc/ with one real file broken: nvcc's lines, exit 7, the files not started are skipped."""
    from comfy_sage import build

    src = tmp_path / "csrc"
    shutil.copytree(build.CSRC, src)
    first = build.sources(src)[0]
    first.write_text(first.read_text() + "\nstatic_assert(false, \"broken on purpose by test_install\");\n")
    res = run_install("--arch", "90", "--jobs", "1",
                      env={"COMFY_SAGE_CSRC": str(src), "COMFY_SAGE_BUILD_DIR": str(tmp_path / "cache")})
    text = out(res)
    assert res.returncode == BUILD_FAILED, text
    assert "broken on purpose by test_install" in text and first.relative_to(src).as_posix() in text
    assert "files not compiled after this failure" in text


# -- no toolkit: NVIDIA's wheels ---------------------------------------------------------------

def test_no_toolkit_with_no_download_prints_what_to_install(tiny):
    from comfy_sage import toolchain

    if toolchain.wheel_toolkit_roots():
        pytest.skip("this Python already has NVIDIA's nvcc wheel installed")
    res = run_install("--arch", "90", "--no-download", env=hidden_nvcc_env(tiny))
    text = out(res)
    assert res.returncode == NO_NVCC, text
    assert "no CUDA 12.8+ toolkit found" in text and "nothing was installed" in text
    assert "-m pip install" in text and "'nvidia-cuda-nvcc==13.0.*'" in text and "'nvidia-nvvm==13.0.*'" in text
    assert "compiling" not in text and "Traceback" not in text


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("COMFY_SAGE_NETWORK_TESTS"),
                    reason="downloads ~45 MB of NVIDIA wheels: set COMFY_SAGE_NETWORK_TESTS=1")
def test_no_toolkit_fetches_the_nvcc_wheel_and_builds(tmp_path, tiny):
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp_path / "venv")
    python = str(tmp_path / "venv" / "bin" / "python")
    res = run_install("--arch", "90", *NO_SELFTEST, python=python, env=hidden_nvcc_env(tiny), timeout=1800)
    text = out(res)
    assert res.returncode == READY, text
    assert "installing nvidia-cuda-nvcc==" in text and "(from pip wheel nvidia-cuda-nvcc" in text


# -- the real sources ----------------------------------------------------------------------------

@pytest.mark.gpu
def test_on_a_gpu_builds_self_tests_and_reports():
    """What the user runs on a GPU machine: build (or cache hit) for the GPU here, self-test, report."""
    res = run_install(timeout=3600)
    text = out(res)
    assert res.returncode == READY, text
    assert "self-test: passed" in text and "auto uses" in text and "FAIL" not in text
    assert re.search(r"backend cuda:\s+available", text)
    again = run_install("--check", timeout=1800)
    assert again.returncode == READY and "intact" in out(again) and "self-test: passed" in out(again), out(again)


@pytest.mark.slow
@needs_nvcc
def test_real_sources_build_for_sm90():
    """csrc/ for sm_90 into the pack's own cache (a later run is a cache hit: minutes only once)."""
    res = run_install("--arch", "90", timeout=3600)
    text = out(res)
    assert res.returncode == READY, text
    assert "cache hit: " in text or "built " in text
    again = run_install("--arch", "90", "--check")
    assert again.returncode == READY and "intact" in out(again), out(again)


@needs_nvcc
def test_builds_for_exactly_the_gpus_here(tiny, monkeypatch, capsys):
    """Without --arch: the arches of the GPUs torch sees (faked here: an sm_90 and an sm_87, which
    runs sm_86 code), and the self-test on exactly those GPUs."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("comfy_sage_install", INSTALL)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    for key, value in tiny.items():
        monkeypatch.setenv(key, value)
    props = [SimpleNamespace(name="fake H200", major=9, minor=0, total_memory=141 << 30),
             SimpleNamespace(name="fake Orin", major=8, minor=7, total_memory=32 << 30)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    tested = []
    monkeypatch.setattr(install, "selftest", lambda report, devices: tested.append(devices))
    # the report's backend list would ask the faked GPU for more than these stubs answer
    monkeypatch.setattr(install, "print_report", lambda *a: None)
    assert install.main([]) == READY
    text = capsys.readouterr().out
    assert "compiling 2 files for sm_86, sm_90 with nvcc" in text, text
    (entry,) = Path(tiny["COMFY_SAGE_BUILD_DIR"]).iterdir()
    assert json.loads((entry / "build.json").read_text())["archs"] == [86, 90]
    assert tested == [[0, 1]]


@pytest.mark.parametrize("line, fix", [
    ("error -- unsupported GNU version! gcc versions later than 14 are not supported!", "CUDAHOSTCXX"),
    ('abi.cu(3): catastrophic error: cannot open source file "cuda_fp8.h"', "toolkit is incomplete"),
    ("abi.cu:3:10: fatal error: cuda_runtime.h: No such file or directory", "toolkit is incomplete"),
    ('abi.cu(3): catastrophic error: cannot open source file "common/types.h"', "bug in comfy-sage"),
    ("nvcc fatal   : Unsupported gpu architecture 'compute_120a'", "too old for the requested GPU"),
])
def test_build_failure_diagnosis_names_the_fix(line, fix):
    import importlib.util

    from comfy_sage import build

    spec = importlib.util.spec_from_file_location("comfy_sage_install", INSTALL)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    outcome = install.diagnose_build(build.BuildError("compile", "nvcc failed", [line]), torch)
    text = "\n".join(outcome.lines)
    assert outcome.code == BUILD_FAILED and line in text and fix in text, text


@pytest.mark.parametrize("torch_cuda, driver, expect", [
    ("13.0", None, "'nvidia-cuda-nvcc==13.0.*'"),          # the wheel of torch's own CUDA minor
    ("12.8", (13, 0), "'nvidia-cuda-nvcc==13.0.*'"),       # no CUDA 12 wheel has nvcc; the driver runs 13
    ("12.8", (12, 8), "install a CUDA 12.x toolkit, 12.8 or newer"),  # neither: the toolkit, or a newer driver
])
def test_which_nvcc_wheel_for_torchs_cuda(monkeypatch, torch_cuda, driver, expect):
    import importlib.util
    from types import SimpleNamespace

    from comfy_sage import toolchain

    spec = importlib.util.spec_from_file_location("comfy_sage_install", INSTALL)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    monkeypatch.setattr(toolchain, "find_nvcc", lambda minimum=None: None)
    monkeypatch.setattr(toolchain, "driver_cuda_version", lambda: driver)
    fake_torch = SimpleNamespace(version=SimpleNamespace(cuda=torch_cuda))
    outcome = install.compiler(fake_torch, SimpleNamespace(no_download=True), {})
    assert outcome.code == NO_NVCC and expect in "\n".join(outcome.lines), outcome.lines


def test_requirements_go_through_pip_without_a_terminal(tmp_path, monkeypatch):
    """requirements.txt lists nothing today (torch is ComfyUI's); a listed package goes to this
    Python's pip, non-interactively, and a pip failure is exit 4."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfy_sage_install", INSTALL)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    listed = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert not any(line.lower().startswith("torch") for line in listed)

    monkeypatch.setattr(install, "HERE", str(tmp_path))
    (tmp_path / "requirements.txt").write_text("# a comment\nsome-package>=1\n")
    calls = []

    def fake_call(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return 1

    monkeypatch.setattr(install.subprocess, "call", fake_call)
    assert install.requirements(no_download=True) is None and calls == []
    outcome = install.requirements(no_download=False)
    (cmd, kwargs), = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"] and "--no-input" in cmd
    assert cmd[-2:] == ["-r", str(tmp_path / "requirements.txt")] and kwargs["stdin"] == subprocess.DEVNULL
    assert outcome.code == 4 and "some-package>=1" in outcome.lines[0]
