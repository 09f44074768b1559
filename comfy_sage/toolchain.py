"""Finding the compilers the native build needs: nvcc (a CUDA toolkit, or NVIDIA's pip wheels)
and the host C++ compiler nvcc drives; and the pinned wheels that bring build-time headers.

Standard library only: ``install.py`` uses this before it knows whether torch is usable.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Optional, Sequence

EXE = ".exe" if os.name == "nt" else ""


@dataclasses.dataclass(frozen=True)
class HeaderWheel:
    """A pinned wheel that only brings headers to the build (never vendored into csrc/)."""

    requirement: str  # pip requirement, pinned ("name==version")
    include: str  # include folder, relative to the wheel's install root (site-packages)


# Build-time header wheels, one line each; the build adds their include folders with -I.
# e.g. HeaderWheel("nvidia-cutlass==4.2.0.0", "cutlass_library/source/include")
HEADER_WHEELS: tuple[HeaderWheel, ...] = ()

# NVIDIA's CUDA 13 wheels put a complete nvcc under site-packages/nvidia/cu13. The CUDA 12
# wheel `nvidia-cuda-nvcc-cu12` has ptxas and libnvvm but no nvcc driver and no cicc
# (checked on 12.8.93), so there is no wheel route to a CUDA 12 compiler. Every part is pinned
# to the same minor: pip otherwise pairs nvcc 13.0 with the newest nvvm (13.5 when checked),
# whose PTX the 13.0 ptxas rejects ("Unsupported .version 9.5").
TOOLKIT_WHEEL_PARTS = ("nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-crt", "nvidia-nvvm",
                       "nvidia-cuda-cccl")
WHEEL_CUDA_MAJORS = (13,)


@dataclasses.dataclass(frozen=True)
class Nvcc:
    path: str
    origin: str  # where it came from, for the report: "CUDA_HOME", "PATH", "pip wheel ..."
    version: str  # "13.0.88"
    compile_flags: tuple[str, ...] = ()  # what this toolkit's layout needs (wheels: include dirs)
    link_flags: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


@dataclasses.dataclass(frozen=True)
class HostCompiler:
    path: str
    name: str
    version: str


def nvcc_version(path: str) -> Optional[str]:
    """'13.0.88' from ``nvcc --version`` (None when it does not run)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"V(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _site_dirs() -> list[Path]:
    seen, dirs = set(), []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p and p not in seen:
            seen.add(p)
            dirs.append(Path(p))
    for p in sys.path:
        if p and p.endswith("site-packages") and p not in seen:
            seen.add(p)
            dirs.append(Path(p))
    return dirs


def wheel_toolkit_roots() -> list[Path]:
    """Toolkit roots installed by NVIDIA's pip wheels into this Python (newest major first)."""
    roots = []
    for site in _site_dirs():
        for major in sorted(WHEEL_CUDA_MAJORS, reverse=True):
            root = site / "nvidia" / f"cu{major}"
            if (root / "bin" / f"nvcc{EXE}").exists():
                roots.append(root)
    return roots


# The oldest nvcc the sources compile with: sm_120a and the FP8 MMA with FP16 accumulation
# (SageAttention2++) need PTX ISA 8.7, i.e. CUDA 12.8.
MIN_NVCC = (12, 8)


def _new_enough(version: str, minimum: Optional[tuple[int, int]]) -> bool:
    return minimum is None or tuple(int(x) for x in version.split(".")[:2]) >= minimum


def find_nvcc(minimum: Optional[tuple[int, int]] = MIN_NVCC) -> Optional[Nvcc]:
    """CUDA_HOME/CUDA_PATH, then PATH, then the nvidia-cuda-nvcc wheel in this Python: the first
    one at least ``minimum`` (None: any)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            path = Path(home) / "bin" / f"nvcc{EXE}"
            version = nvcc_version(str(path)) if path.exists() else None
            if version and _new_enough(version, minimum):
                return Nvcc(str(path), f"{var}={home}", version)
    on_path = shutil.which("nvcc")
    if on_path:
        version = nvcc_version(on_path)
        if version and _new_enough(version, minimum):
            return Nvcc(on_path, "PATH", version)
    for root in wheel_toolkit_roots():
        path = root / "bin" / f"nvcc{EXE}"
        version = nvcc_version(str(path))
        if version and _new_enough(version, minimum):
            return Nvcc(str(path), f"pip wheel nvidia-cuda-nvcc {_dist_version('nvidia-cuda-nvcc') or ''}".strip(),
                        version, *_wheel_flags(root))
    return None


def _wheel_flags(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """-I/-L for a wheel toolkit. nvcc.profile searches only beside nvcc, and lib64/ where the
    wheels use lib/. The wheels of one CUDA major can also lie in two site-packages (nvcc in a
    venv, torch's nvidia-cuda-runtime in the system site the venv sees): then the other tree's
    headers and libraries are added, but never in front of a complete tree of nvcc's own."""
    compile_flags, link_flags = [], [f"-L{root / 'lib'}"]
    if (root / "include" / "cuda_runtime.h").exists() and (root / "lib").joinpath(
            "libcudart_static.a" if os.name != "nt" else "cudart_static.lib").exists():
        return (), tuple(link_flags)
    for site in _site_dirs():
        tree = site / "nvidia" / root.name
        if tree == root:
            continue
        if (tree / "include" / "cuda_runtime.h").exists():
            compile_flags.append(f"-I{tree / 'include'}")
            if (tree / "include" / "cccl").is_dir():
                compile_flags += ["-isystem", str(tree / "include" / "cccl")]
        if (tree / "lib").is_dir():
            link_flags.append(f"-L{tree / 'lib'}")
    return tuple(compile_flags), tuple(link_flags)


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def toolkit_wheels(cuda_version: Optional[str]) -> list[str]:
    """pip requirements for an nvcc matching ``cuda_version`` ('13.0', torch's); [] when no
    wheel carries an nvcc for that major (CUDA 12)."""
    major_minor = cuda_version or f"{max(WHEEL_CUDA_MAJORS)}.0"
    major = int(major_minor.split(".")[0])
    if major not in WHEEL_CUDA_MAJORS:
        return []
    minor = ".".join(major_minor.split(".")[:2])
    return [f"{part}=={minor}.*" for part in TOOLKIT_WHEEL_PARTS]


def header_include_dirs() -> list[Path]:
    dirs = []
    for wheel in HEADER_WHEELS:
        for site in _site_dirs():
            d = site / wheel.include
            if d.is_dir():
                dirs.append(d)
                break
    return dirs


def missing_header_wheels() -> list[str]:
    """Requirements of HEADER_WHEELS not installed at their pinned version."""
    missing = []
    for wheel in HEADER_WHEELS:
        name, _, version = wheel.requirement.partition("==")
        if _dist_version(name) != version or not any((s / wheel.include).is_dir() for s in _site_dirs()):
            missing.append(wheel.requirement)
    return missing


def find_host_compiler() -> Optional[HostCompiler]:
    """The C++ compiler nvcc will call: cl.exe on Windows, else $CUDAHOSTCXX or g++ (nvcc's default)."""
    if os.name == "nt":
        names = ["cl"]
    else:
        names = [os.environ["CUDAHOSTCXX"]] if os.environ.get("CUDAHOSTCXX") else ["g++"]
    for name in names:
        path = shutil.which(name)
        if path:
            return HostCompiler(path, Path(name).name, _host_version(path))
    return None


def _host_version(path: str) -> str:
    try:
        proc = subprocess.run([path] if os.name == "nt" else [path, "--version"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def host_compiler_hint() -> str:
    """What to install for this OS when no host compiler is found."""
    if os.name == "nt":
        return ("install Visual Studio 2022 Build Tools with the 'Desktop development with C++' workload, "
                "then run install.py from the 'x64 Native Tools Command Prompt for VS 2022' (cl.exe on PATH)")
    if sys.platform == "darwin":
        return "macOS has no NVIDIA CUDA support; the node uses ComfyUI's attention there"
    distro = _linux_id()
    if distro in ("debian", "ubuntu", "linuxmint", "pop"):
        return "install g++: sudo apt-get install g++"
    if distro in ("fedora", "rhel", "centos", "rocky", "almalinux"):
        return "install g++: sudo dnf install gcc-c++"
    if distro in ("arch", "manjaro", "endeavouros"):
        return "install g++: sudo pacman -S gcc"
    return "install g++ (the GNU C++ compiler) with your distribution's package manager"


def _linux_id() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    m = re.search(r"^ID=\"?([\w.-]+)\"?", text, re.M)
    return m.group(1).lower() if m else ""


def pip_command(requirements: Sequence[str]) -> list[str]:
    """A non-interactive pip install into this Python (uv's when the environment has no pip)."""
    flags = ["--disable-pip-version-check", "--no-input"]
    try:
        import pip  # noqa: F401
    except ImportError:
        if shutil.which("uv"):
            return ["uv", "pip", "install", "--python", sys.executable, *requirements]
    return [sys.executable, "-m", "pip", "install", *flags, *requirements]


def driver_cuda_version() -> Optional[tuple[int, int]]:
    """The newest CUDA the installed driver supports, e.g. (13, 0); None without a driver."""
    import ctypes

    names = ["nvcuda.dll"] if os.name == "nt" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int()
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
                return version.value // 1000, (version.value % 1000) // 10
        except AttributeError:
            return None
    return None


def os_description() -> str:
    return f"{platform.system()} {platform.release()} ({platform.machine()})"
