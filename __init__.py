"""ComfyUI entry point of comfy-sage. Importing it never raises: whatever is missing (the V3
node API on an old ComfyUI, a GPU, the compiled library) is logged and the rest still loads.

ComfyUI imports this folder as a package under a path-derived name; ``comfy_sage`` is made
importable under its own name (one copy, so its torch.library ops register once).
"""

import logging
import os
import sys

_logger = logging.getLogger("comfy_sage")
_ROOT = os.path.dirname(os.path.abspath(__file__))

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

if _ROOT not in sys.path:
    sys.path.append(_ROOT)  # appended: never shadows ComfyUI's own top-level modules (nodes, comfy)


def _report_backends():
    from comfy_sage import available_backends

    missing = {name: why for name, why in available_backends().items() if why is not None}
    for name, why in sorted(missing.items()):
        _logger.info("comfy_sage: backend %s unavailable: %s", name, why)


try:
    from .nodes import NODES, comfy_entrypoint  # noqa: F401  (ComfyUI reads the mapping first)

    for _node in NODES:
        _schema = _node.GET_SCHEMA()
        NODE_CLASS_MAPPINGS[_schema.node_id] = _node
        NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
    __all__.append("comfy_entrypoint")
except ImportError as e:
    # Imported outside any host (pytest imports a rootdir package's __init__.py): say it quietly.
    _level = logging.WARNING if "comfy" in sys.modules else logging.DEBUG
    _missing = getattr(e, "name", None) or ""
    if _missing.split(".")[0] in ("comfy_api", "comfy"):  # the host lacks the V3 node API
        _logger.log(_level, "comfy_sage: nodes not loaded (%s: this ComfyUI is too old or incomplete; update it "
                    "to use the Sage nodes)", e)
    elif _missing.split(".")[0] == "torch":
        _logger.log(_level, "comfy_sage: nodes not loaded (%s: PyTorch is not importable in this Python)", e)
    else:  # an import inside the pack (or one of its dependencies) failed: not the host's fault
        _logger.log(max(_level, logging.WARNING), "comfy_sage: nodes not loaded: importing them failed (%s: %s); "
                    "reinstall comfy-sage, or report this with the traceback below", type(e).__name__, e,
                    exc_info=True)
except Exception as e:  # noqa: BLE001 - the host must keep starting whatever breaks here
    _logger.exception("comfy_sage: nodes not loaded: %s", e)

try:
    from . import routes as _routes

    _routes.register()
except Exception as e:  # noqa: BLE001 - the status route is a convenience; the host must keep starting
    _logger.warning("comfy_sage: status route not registered: %s", e)

try:
    _report_backends()
except Exception as e:  # noqa: BLE001 - a diagnostic only
    _logger.warning("comfy_sage: could not query backends: %s", e)
