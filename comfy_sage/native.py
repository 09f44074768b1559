"""Loading the native library without ever taking the host process down.

ComfyUI imports this pack at start-up; a damaged file in the build cache must not stop it.
A truncated ELF can kill the process with SIGBUS inside ``dlopen`` (no Python exception to
catch), so the file is checked against the size and sha256 in its build record *before* it is
mapped; garbage, an empty file, a library of another ABI or one missing a symbol raise
OSError/AttributeError in ctypes, which become a reason string here. Every failure is a
``Loaded`` with ``lib=None`` and a reason that ends with the command that repairs it.
"""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from . import build


@dataclasses.dataclass(frozen=True)
class Loaded:
    lib: Optional[ctypes.CDLL]
    path: Optional[Path]
    reason: Optional[str]  # None when lib is usable


def load(arch: int, abi_version: int, symbols: Sequence[str]) -> Loaded:
    """The cached library for ``arch``, checked (integrity, then dlopen, symbols, ABI version)."""
    try:
        path = build.find_library(arch)
        if path is None:
            return Loaded(None, None, build.why_no_library(arch))
    except OSError as e:  # an unreadable cache folder: say so, like any other damage
        return Loaded(None, None, f"the build cache cannot be read ({e}), {build.FIX}")
    except Exception as e:  # noqa: BLE001 - whatever the cache holds, the host process must keep running
        return Loaded(None, None, f"reading the build cache failed ({type(e).__name__}: {e}), {build.FIX}")
    return open_checked(path, abi_version, symbols)


def open_checked(path: Path, abi_version: int, symbols: Sequence[str]) -> Loaded:
    """dlopen ``path`` (already integrity-checked) and check its symbols and ABI version."""
    def bad(why: str) -> Loaded:
        return Loaded(None, path, f"the native library {path} {why}, {build.FIX}")

    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return bad(f"does not load ({e})")
    missing = [name for name in ("cs_abi_version", *symbols) if not hasattr(lib, name)]
    if missing:
        return bad(f"lacks {', '.join(missing)} (built from other sources?)")
    lib.cs_abi_version.restype = ctypes.c_int
    lib.cs_abi_version.argtypes = []
    version = lib.cs_abi_version()
    if version != abi_version:
        return bad(f"has ABI version {version}, this comfy_sage needs {abi_version}")
    return Loaded(lib, path, None)
