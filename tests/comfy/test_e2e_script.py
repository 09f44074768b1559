"""bench/e2e.py end to end in the real ComfyUI on the CPU (--tiny): every mode samples, the
divergence and call counts it reports are there and sane. The GPU numbers come from the same
script (BENCHMARKS.md), so a broken script must fail here first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_e2e_tiny_wan_every_cpu_mode(tmp_path, comfyui_path):
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "e2e.py"), "--comfyui", str(comfyui_path), "--tiny", "--models", "wan",
         "--modes", "host,fp32,reference,reference-accurate", "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = json.loads(out.read_text())["models"]["wan"]["runs"]
    assert set(runs) == {"host", "fp32", "reference", "reference-accurate"}
    for mode, run in runs.items():
        assert run["finite"], mode
        if mode == "host":
            continue
        first, after = run["divergence_per_step"]
        assert first["rel_l1"] == 0.0, mode  # the first step's input is the shared noise
        # A real change of attention moves the latent (0 would mean the mode never ran), but on the
        # order of the bf16 floor: the tiny model measured 0.003 (fp32), 0.004 / 0.008 (reference).
        assert 0.0 < after["rel_l1"] < 0.05, (mode, after)
    for mode in ("reference", "reference-accurate"):  # every self- and cross-attention call quantized
        calls = runs[mode]["calls"]
        assert calls["ours"] == calls["calls"] > 0 and calls["backends"] == {"reference": calls["ours"]}, calls
    assert "calls" not in runs["fp32"]  # no node: the host's own attention, upcast
