"""Per-run statistics of one installed override: which calls ran ours, which fell back and why.

A *run* is one sampling call: the host puts the schedule in
``transformer_options["sample_sigmas"]`` once per sampling, so a new schedule object starts a
new run (the previous one is kept as ``last_run``). The compare and benchmark nodes read
:meth:`Stats.snapshot`; nothing here imports ComfyUI.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Optional

OURS = "ours"


@dataclasses.dataclass
class RunStats:
    calls: int = 0
    ours: int = 0
    fallback: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # (batch, heads, q_tokens, kv_tokens, head_dim, dtype) -> {"ours": n, "<reason>": n}
    by_shape: dict = dataclasses.field(default_factory=dict)
    backends: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    attention_s: float = 0.0  # only measured when the config asks for timing
    timed_calls: int = 0

    def add(self, shape: tuple, outcome: str, backend: Optional[str] = None, seconds: Optional[float] = None):
        self.calls += 1
        if outcome == OURS:
            self.ours += 1
            if backend is not None:
                self.backends[backend] += 1
        else:
            self.fallback[outcome] += 1
        self.by_shape.setdefault(shape, collections.Counter())[outcome] += 1
        if seconds is not None:
            self.attention_s += seconds
            self.timed_calls += 1

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
        if run_key is None:
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
