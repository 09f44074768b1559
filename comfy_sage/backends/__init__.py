"""The backend registry: which backends exist, which can run here, and why not the others."""

from __future__ import annotations

import importlib
from typing import Optional

from .base import Backend, Call  # noqa: F401  (re-exported for backend authors)

# Preference order for humans reading a table; `auto` does not use it (see dispatch.py).
NAMES = ("cuda", "triton", "reference", "sdpa")

_loaded: dict[str, object] = {}
_import_errors: dict[str, str] = {}


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
    backend = _load(name)
    if backend is None or backend.availability() is not None:
        return None
    return backend


def why_not(name: str) -> Optional[str]:
    """None when ``name`` can run here, else one sentence saying why not."""
    backend = _load(name)
    if backend is None:
        return _import_errors[name]
    return backend.availability()


def available_backends() -> dict[str, Optional[str]]:
    """Every backend name mapped to None (runs here) or the reason it does not."""
    return {name: why_not(name) for name in NAMES}
