"""One log line per reason, never one per call; counts kept for whoever wants the totals."""

from __future__ import annotations

import collections
import logging
import threading

logger = logging.getLogger("comfy_sage")

_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()


def once(reason: str, message: str, level: int = logging.WARNING) -> int:
    """Count ``reason``; log ``message`` the first time it is seen. Returns the running count."""
    with _lock:
        _counts[reason] += 1
        count = _counts[reason]
    if count == 1:
        logger.log(level, "%s (logged once; later occurrences are counted)", message)
    return count


def counts() -> dict:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()
