"""Real-ComfyUI tests: find the host, import it once in-process (CPU), build tiny models.

The host is found through ``COMFYUI_PATH`` or by this repository sitting in
``<ComfyUI>/custom_nodes/``; without one every test here is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_comfyui() -> tuple[Path | None, str]:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if (path / "main.py").is_file() and (path / "comfy").is_dir():
            return path, ""
        return None, f"COMFYUI_PATH={env} is not a ComfyUI folder (no main.py and comfy/)"
    parent = REPO.parent
    if parent.name == "custom_nodes" and (parent.parent / "main.py").is_file():
        return parent.parent, ""
    return None, "no ComfyUI: set COMFYUI_PATH, or clone this repository into <ComfyUI>/custom_nodes/"


COMFYUI, SKIP_REASON = find_comfyui()


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=SKIP_REASON) if COMFYUI is None else None
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.comfy)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    if COMFYUI is None:
        pytest.skip(SKIP_REASON)
    return COMFYUI


@pytest.fixture(scope="session")
def host(comfyui_path):
    """The host imported in-process on the CPU, with this repository loaded as a custom node
    through the host's own loader. Returns a namespace of the modules the tests use."""
    import types

    if str(comfyui_path) not in sys.path:
        sys.path.insert(0, str(comfyui_path))
    # ComfyUI and this repository both have a top-level nodes.py: the host's must win.
    sys.modules.pop("nodes", None)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management as mm
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    import nodes as host_nodes
    from comfy.ldm.modules import attention

    loaded = asyncio.run(host_nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    assert loaded, "the host's loader rejected this repository"
    node = host_nodes.NODE_CLASS_MAPPINGS["SageAttention"]
    return types.SimpleNamespace(comfy=comfy, mm=mm, sd=comfy.sd, sample=comfy.sample, samplers=comfy.samplers,
                                 nodes=host_nodes, attention=attention, node=node, args=args)


@pytest.fixture
def bf16_on_cpu(host, monkeypatch):
    """Run models in bfloat16 on the CPU, as GPUs do: the host keeps CPU models in float32
    (then the override correctly keeps the host attention for every call, see override.py)."""
    monkeypatch.setattr(host.mm, "should_use_bf16", lambda *a, **kw: True)
    yield
