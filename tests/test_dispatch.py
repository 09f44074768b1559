"""backend="auto": every rule of the table is backed by its committed measurement."""

import json
import os

import pytest
import torch

from comfy_sage import dispatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# bench/public_sage.py's row keys, as `python -m comfy_sage bench` names the variants
PUBLIC_SAGE_KEYS = {"cudnn": "sdpa.cudnn", "sdpa_default": "sdpa.default", "ours": "cuda.int8qk-fp8pv",
                    "ours_fp8_acc16": "cuda.int8qk-fp8-acc16pv", "public_sage": "public.sageattention"}


def evidence_rows(data):
    """{(dims, variant): {"ms", "rel_l1"}} from either benchmark's JSON (`comfy_sage bench` rows, or
    bench/public_sage.py rows: one per shape with every implementation's time inside)."""
    rows = {}
    for r in data["rows"]:
        if "variant" in r:
            rows[(r["dims"], r["variant"])] = r
            continue
        dims = "x".join(map(str, r["shape"])) + (" causal" if r["causal"] else "")
        for key, ms in r["ms"].items():
            acc = r["accuracy_vs_f32"].get(key, {})
            rows[(dims, PUBLIC_SAGE_KEYS[key])] = {"ms": ms, "rel_l1": acc.get("rel_l1")}
    return rows


@pytest.mark.parametrize("rule", dispatch.RULES, ids=lambda r: f"{r.head_dims}.{r.causal}.{r.backend}.{r.variant}")
def test_rule_is_a_measured_win(rule):
    with open(os.path.join(ROOT, rule.evidence)) as f:
        data = json.load(f)
    assert tuple(data["environment"]["capability"]) == rule.capability
    rows = evidence_rows(data)  # dims: unique per shape, causal included
    covered = []
    for (shape, variant), row in rows.items():
        if variant != f"{rule.backend}.{rule.variant}" or row.get("ms") is None:
            continue
        b, h, n, d = (int(x) for x in shape.split()[0].split("x"))
        causal = shape.endswith("causal")
        if d in rule.head_dims and n >= rule.min_q_tokens and causal == rule.causal:
            covered.append(shape)
            # Faster than every SDPA kernel measured at that shape.
            sdpa = [r["ms"] for (s, v), r in rows.items() if s == shape and v.startswith("sdpa.") and r.get("ms")]
            assert sdpa and row["ms"] < min(sdpa), (shape, row["ms"], sdpa)
            assert row["rel_l1"] < 0.045  # SageAttention2's scheme: 0.038 on Gaussian bf16 inputs
    assert covered, "the evidence has no measurement inside the rule's shape class"


def test_auto_picks_the_fastest_measured_variant(monkeypatch):
    # At every measured row that a rule covers, auto's pick (the first matching rule, no variant asked
    # for) is the fastest of our variants measured there.
    dispatch.capability.cache_clear()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    try:
        checked = 0
        for evidence in sorted({r.evidence for r in dispatch.RULES if r.backend == "cuda"}):
            with open(os.path.join(ROOT, evidence)) as f:
                rows = evidence_rows(json.load(f))
            for dims in sorted({dims for dims, _ in rows}):
                n, d = (int(x) for x in dims.split()[0].split("x")[2:])
                rule = dispatch.choose_cuda(0, d, n, n, dims.endswith("causal"), lambda r: r.backend == "cuda")
                ours = {v: r["ms"] for (s, v), r in rows.items() if s == dims and v.startswith("cuda.") and r["ms"]}
                if rule is None or len(ours) < 2:
                    continue
                assert f"cuda.{rule.variant}" == min(ours, key=ours.get), (dims, rule.variant, ours)
                checked += 1
        assert checked >= 10
    finally:
        dispatch.capability.cache_clear()


def test_choose_matches_only_the_measured_class(monkeypatch):
    # The capability is asked once per device and cached: clear the cache around each pretend GPU.
    dispatch.capability.cache_clear()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    q = torch.device("cuda")
    rule = dispatch.choose(q, 128, 32760, 32760, False)
    assert rule is not None and (rule.backend, rule.variant) == ("cuda", "int8qk-fp8-acc16pv")  # 1.47x at 32k
    assert dispatch.choose(q, 128, 16384, 16384, False).variant == "int8qk-fp8pv"  # 1.38x, fp8-acc16 1.33x
    assert dispatch.choose(q, 128, 8192, 8192, False).variant == "int8qk-fp8pv"  # 1.31x
    assert dispatch.choose(q, 128, 4608, 4608, False) is None  # Flux: 1.0x
    assert dispatch.choose(q, 128, 8192, 8192, True).variant == "int8qk-fp8-acc16pv"  # causal 1.23x
    assert dispatch.choose(q, 128, 4096, 4096, True) is None  # causal 4k: 1.01x, within noise
    assert dispatch.choose(q, 128, 32760, 512, False) is None  # cross-attention to text: not measured
    assert dispatch.choose(q, 64, 8192, 8192, False).variant == "int8qk-fp8-acc16pv"  # 1.11x
    assert dispatch.choose(q, 64, 8192, 8192, True) is None  # 1.00x
    assert dispatch.choose(q, 64, 4096, 4096, False) is None  # SDXL's 4096: SDPA
    # Without the native library, the Triton rule (measured from 32760 tokens) takes over.
    no_cuda = lambda rule: rule.backend != "cuda"  # noqa: E731
    assert dispatch.choose(q, 128, 32760, 32760, False, no_cuda).backend == "triton"
    assert dispatch.choose(q, 128, 16384, 16384, False, no_cuda) is None  # triton: 0.99x there
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    dispatch.capability.cache_clear()
    assert dispatch.choose(q, 128, 32760, 32760, False) is None
    assert dispatch.choose(torch.device("cpu"), 128, 32760, 32760, False) is None
    dispatch.capability.cache_clear()


def test_the_capability_is_asked_once_per_device(monkeypatch):
    dispatch.capability.cache_clear()
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or (9, 0))
    q = torch.device("cuda", 0)
    for _ in range(3):
        dispatch.choose(q, 128, 32760, 32760, False)
    assert asked == [0]
    dispatch.capability.cache_clear()
