"""Markers: `gpu` tests skip without CUDA; `comfy` tests (tests/comfy/) skip without ComfyUI."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    reason = "needs a CUDA GPU: " + ("this torch is a CPU build" if not torch.version.cuda
                                     else "no CUDA device is visible")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
