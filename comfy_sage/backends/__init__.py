"""The backend registry: which backends exist, which can run here, and why not the others.

Whether a backend can run is a property of the process (installed packages, visible GPUs, the
built library), so it is decided once and cached: the per-call path only looks it up.
``refresh()`` forgets the answers (after building the native library in-process, or in tests).
"""

from __future__ import annotations

import importlib
from typing import Optional

from .base import Backend, Call  # noqa: F401  (re-exported for backend authors)

# Preference order for humans reading a table; `auto` does not use it (see dispatch.py).
NAMES = ("cuda", "triton", "reference", "sdpa")

_loaded: dict[str, object] = {}
_import_errors: dict[str, str] = {}
_why_not: dict[str, Optional[str]] = {}


def _load(name: str) -> Optional[Backend]:
    if name in _loaded:
        return _loaded[name]
    if name in _import_errors:
        return None
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{name}":
            _import_errors[name] = f"the {name} backend is not part of this release"
        else:
            _import_errors[name] = f"importing the {name} backend failed: {e}"
        return None
    except Exception as e:  # an import must never take the pack down; say why instead
        _import_errors[name] = f"importing the {name} backend failed: {type(e).__name__}: {e}"
        return None
    _loaded[name] = module.BACKEND
    return module.BACKEND


def get(name: str) -> Optional[Backend]:
    """The backend object, or None when it cannot run in this process (see ``why_not``)."""
    if name not in NAMES:
        raise ValueError(f"backend: expected one of {'|'.join(NAMES)}, got {name!r}")
    if why_not(name) is not None:
        return None
    return _loaded[name]


def why_not(name: str) -> Optional[str]:
    """None when ``name`` can run here, else one sentence saying why not (cached per process)."""
    try:
        return _why_not[name]
    except KeyError:
        pass
    backend = _load(name)
    if backend is None:
        reason = _import_errors[name]
    else:
        try:
            reason = backend.availability()
        except Exception as e:  # noqa: BLE001 - a broken backend is unavailable, never a crash of the host
            reason = f"checking the {name} backend failed: {type(e).__name__}: {e}"
    _why_not[name] = reason
    return reason


def refresh() -> None:
    """Forget the cached availability (the next query asks each backend again)."""
    _why_not.clear()


def available_backends() -> dict[str, Optional[str]]:
    """Every backend name mapped to None (runs here) or the reason it does not."""
    return {name: why_not(name) for name in NAMES}
