"""Per-run statistics of one installed override: which calls ran ours, which fell back and why.

A *run* is one sampling call: the host puts the schedule in
``transformer_options["sample_sigmas"]`` once per sampling, so a new schedule object starts a
new run (the previous one is kept as ``last_run``). The compare and benchmark nodes read
:meth:`Stats.snapshot`; nothing here imports ComfyUI.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Optional

OURS = "ours"


class RunStats:
    """Counts of one run, kept as one dictionary (shape, outcome, backend) -> calls so that the
    per-call cost is a single dictionary update; the totals are derived when read."""

    def __init__(self):
        self.counts: dict = {}
        self.attention_s = 0.0  # only measured when the config asks for timing
        self.timed_calls = 0

    def add(self, shape: tuple, outcome: str, backend: Optional[str] = None, seconds: Optional[float] = None):
        key = (shape, outcome, backend)
        self.counts[key] = self.counts.get(key, 0) + 1
        if seconds is not None:
            self.attention_s += seconds
            self.timed_calls += 1

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    @property
    def ours(self) -> int:
        return sum(n for (_, outcome, _), n in self.counts.items() if outcome == OURS)

    @property
    def fallback(self) -> collections.Counter:
        out = collections.Counter()
        for (_, outcome, _), n in self.counts.items():
            if outcome != OURS:
                out[outcome] += n
        return out

    @property
    def backends(self) -> collections.Counter:
        out = collections.Counter()
        for (_, outcome, backend), n in self.counts.items():
            if outcome == OURS and backend is not None:
                out[backend] += n
        return out

    @property
    def by_shape(self) -> dict:
        """(batch, heads, q_tokens, kv_tokens, head_dim, dtype) -> {"ours": n, "<reason>": n}"""
        out: dict = {}
        for (shape, outcome, _), n in self.counts.items():
            out.setdefault(shape, collections.Counter())[outcome] += n
        return out

    def as_dict(self) -> dict:
        return {
            "calls": self.calls,
            "ours": self.ours,
            "fallback": dict(self.fallback),
            "backends": dict(self.backends),
            "attention_s": self.attention_s,
            "timed_calls": self.timed_calls,
            "by_shape": [
                {
                    "batch": s[0],
                    "heads": s[1],
                    "q_tokens": s[2],
                    "kv_tokens": s[3],
                    "head_dim": s[4],
                    "dtype": s[5],
                    **dict(counts),
                }
                for s, counts in sorted(self.by_shape.items(), key=lambda kv: kv[0][:5])
            ],
        }


class Stats:
    """Totals since install plus the current and the previous run; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.total = RunStats()
        self.run = RunStats()
        self.last_run: Optional[RunStats] = None
        self.runs = 0
        self._run_key = None

    def begin_call(self, run_key) -> None:
        """``run_key``: the host's sample_sigmas (or None); a different object starts a new run."""
        if run_key is None or run_key is self._run_key:  # every call but the first of a run: no lock
            return
        with self._lock:
            if run_key is not self._run_key:
                if self._run_key is not None or self.run.calls:
                    self.last_run = self.run
                self.run = RunStats()
                self.runs += 1
                self._run_key = run_key

    def add(self, shape: tuple, outcome: str, backend: Optional[str] = None, seconds: Optional[float] = None):
        with self._lock:
            self.total.add(shape, outcome, backend, seconds)
            self.run.add(shape, outcome, backend, seconds)

    def reset(self) -> None:
        with self._lock:
            self.total = RunStats()
            self.run = RunStats()
            self.last_run = None
            self.runs = 0
            self._run_key = None

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "runs": self.runs,
                "total": self.total.as_dict(),
                "run": self.run.as_dict(),
                "last_run": None if self.last_run is None else self.last_run.as_dict(),
            }


# The Sage Attention nodes' statistics by the host's node id, for the pack's status route
# (routes.py) and the web extension. Weak: when the host drops a node's cached model, its
# override and these statistics go, and so does the entry.
_BY_NODE: "weakref.WeakValueDictionary[str, Stats]" = weakref.WeakValueDictionary()


def track(node_id, stats: Stats) -> None:
    """Remember ``stats`` as those of the node ``node_id`` (None: nothing to remember)."""
    if node_id is not None:
        _BY_NODE[str(node_id)] = stats


def tracked() -> dict:
    """{node id: snapshot} of every tracked node whose model is still alive."""
    return {node_id: stats.snapshot() for node_id, stats in list(_BY_NODE.items())}
