"""The pack's server route for the web extension: ``GET /comfy_sage/status`` (also under
``/api/``) answers what comfy_sage can run on this machine and what each Sage Attention node's
override did, as JSON.

Registered on the host's server from ``__init__.py``; ``comfy_sage`` itself never imports the
server. Registration and every answer are guarded: a failure here costs the status display,
never the host.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("comfy_sage")

ROUTE = "/comfy_sage/status"


def status_payload() -> dict:
    """comfy_sage's info, what each backend choice runs here, and the tracked nodes' statistics."""
    from comfy_sage.cli import info
    from comfy_sage.comfy.benchmark import machine_summary
    from comfy_sage.comfy.compare import json_safe
    from comfy_sage.comfy.stats import tracked

    nodes = {}
    for node_id, snap in tracked().items():
        run = snap["run"] if snap["run"]["calls"] else (snap["last_run"] or snap["run"])
        nodes[node_id] = {"runs": snap["runs"], "total": _summary(snap["total"]), "last_run": _summary(run)}
    return json_safe({"info": info(), "machine": machine_summary(), "nodes": nodes})


def _summary(run: dict) -> dict:
    return {key: run.get(key) for key in ("calls", "ours", "fallback", "backends", "attention_s", "timed_calls")}


def register() -> bool:
    """Add the route to the running host's server; False (logged) when there is none."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError as e:  # imported outside a host (tests, scripts)
        logger.debug("comfy_sage: no server to register %s on (%s)", ROUTE, e)
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        logger.debug("comfy_sage: the host's server is not created; %s not registered", ROUTE)
        return False

    @instance.routes.get(ROUTE)
    async def status(request):
        try:
            return web.json_response(status_payload())
        except Exception as e:  # noqa: BLE001 - the status display must never break the server
            logger.exception("comfy_sage: %s failed", ROUTE)
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=500)

    return True
