"""Known answers for the Sage Benchmark node's arithmetic (comfy_sage/comfy/benchmark.py): no ComfyUI."""

from __future__ import annotations

import collections
import copy

import pytest
import torch

from comfy_sage import bench
from comfy_sage.comfy import benchmark as b
from comfy_sage.comfy.stats import OURS, Stats


def row(shape, variant, ms, rel=0.01, **extra):
    return {"shape": shape, "variant": variant, "ms": ms, "rel_l1": rel, **extra}


def test_recorder_records_host_layouts_and_counts_masked_calls_apart():
    rec = b.ShapeRecorder()
    assert copy.deepcopy({"r": rec})["r"] is rec
    calls = []

    def host(q, k, v, heads, **kw):
        calls.append(kw)
        return q

    q = torch.zeros(2, 32, 256, dtype=torch.bfloat16)  # (B, L, H·D), 2 heads of 128
    k = torch.zeros(2, 12, 256, dtype=torch.bfloat16)
    rec(host, q, k, k, 2)
    rec(host, q, q, q, 2, transformer_options={})
    rec(host, q, q, q, 2, mask=torch.zeros(32, 32))
    q4 = torch.zeros(1, 3, 16, 64)  # skip_reshape: (B, H, L, D)
    rec(host, q4, q4, q4, 3, skip_reshape=True)
    assert rec.masked == 1 and len(calls) == 4 and calls[1]["transformer_options"] == {}
    assert rec.counts == {
        b.CallShape(2, 2, 32, 12, 128, "bfloat16"): 1,
        b.CallShape(2, 2, 32, 32, 128, "bfloat16"): 1,
        b.CallShape(1, 3, 16, 16, 64, "float32"): 1,
    }
    inner_seen = []
    chained = b.ShapeRecorder(lambda func, *a, **kw: inner_seen.append(1) or func(*a, **kw))
    chained(host, q, q, q, 2)
    assert inner_seen == [1]


def test_shapes_from_the_override_statistics_count_every_outcome():
    stats = Stats()
    shape = (2, 2, 32, 32, 128, "bfloat16")
    stats.add(shape, OURS, backend="reference")
    stats.add(shape, "with masks")
    stats.add((2, 2, 32, 12, 128, "bfloat16"), OURS, backend="reference")
    counts = b.shapes_from_stats(stats.snapshot()["total"])
    assert counts == {b.CallShape(2, 2, 32, 32, 128, "bfloat16"): 2, b.CallShape(2, 2, 32, 12, 128, "bfloat16"): 1}
    assert b.shapes_from_stats(None) == collections.Counter()


def test_top_shapes_rank_by_calls_times_flops():
    big = b.CallShape(1, 2, 1024, 1024, 64, "bfloat16")  # 4·2·1024²·64 FLOPs
    small = b.CallShape(1, 2, 256, 256, 64, "bfloat16")  # 16x fewer per call
    cross = b.CallShape(1, 2, 1024, 12, 64, "bfloat16")
    counts = collections.Counter({small: 20, big: 1, cross: 5})
    assert [s for s, _ in b.top_shapes(counts, 2)] == [small, big]  # 20/16 = 1.25 big-call equivalents
    assert cross.label() == "1x2x1024x64 kv12" and big.label() == "1x2x1024x64"
    assert cross.bench_shape() == bench.Shape("1x2x1024x64 kv12", 1, 2, 1024, 64, kv_tokens=12)
    assert cross.bench_shape().flops == cross.flops == 4.0 * 2 * 1024 * 12 * 64


def test_totals_weight_each_shape_by_its_calls():
    rows = [row("A", "sdpa.default", 1.0, 0.002), row("B", "sdpa.default", 2.0, 0.002),
            row("A", "triton.int8qk-fp8pv", 0.5, 0.038), row("B", "triton.int8qk-fp8pv", 1.5, 0.039),
            row("A", "reference.int4qk-fp8pv", 9.0, 0.2), row("B", "reference.int4qk-fp8pv", 9.0, 0.3),
            row("A", "cuda.int8qk-fp16pv", 0.1), row("B", "cuda.int8qk-fp16pv", None, None, error="RuntimeError: x")]
    entries = {e["variant"]: e for e in b.totals(rows, {"A": 10, "B": 3})}
    assert entries["sdpa.default"]["total_ms"] == pytest.approx(10 * 1.0 + 3 * 2.0)
    assert entries["triton.int8qk-fp8pv"]["total_ms"] == pytest.approx(10 * 0.5 + 3 * 1.5)
    assert entries["triton.int8qk-fp8pv"]["worst_rel_l1"] == 0.039 and entries["triton.int8qk-fp8pv"]["passes_gate"]
    assert not entries["reference.int4qk-fp8pv"]["passes_gate"]
    assert entries["cuda.int8qk-fp16pv"]["total_ms"] is None and "RuntimeError" in entries["cuda.int8qk-fp16pv"]["note"]
    assert entries["sdpa.default"]["quantized"] is False and entries["sdpa.default"]["passes_gate"]
    assert [e["variant"] for e in b.totals(rows, {"A": 10, "B": 3})][-1] == "cuda.int8qk-fp16pv"  # untimed last


def test_recommend_the_fastest_accurate_quantized_variant_when_it_beats_sdpa():
    rows = [row("A", "sdpa.default", 2.0, 0.002), row("A", "sdpa.cudnn", 1.6, 0.002),
            row("A", "triton.int8qk-fp8pv", 1.0, 0.038), row("A", "cuda.int8qk-int8pv", 0.8, 0.09)]
    rec = b.recommend(b.totals(rows, {"A": 1}), "cuda:0")
    assert (rec["backend"], rec["variant"]) == ("triton", "int8qk-fp8pv")  # cuda's is faster but fails the gate
    assert rec["speedup"] == pytest.approx(1.6)
    assert "1.60x" in rec["text"] and "cudnn" in rec["text"] and "CPU" not in rec["text"]


def test_recommend_keeps_the_host_attention_when_sdpa_is_faster_and_says_cpu():
    rows = [row("A", "sdpa.default", 1.0, 0.002), row("A", "triton.int8qk-fp8pv", 1.25, 0.038)]
    rec = b.recommend(b.totals(rows, {"A": 4}), "cuda:0")
    assert rec["backend"] == "off" and rec["speedup"] == pytest.approx(1 / 1.25)
    assert "Keep ComfyUI's attention" in rec["text"] and "5 ms" in rec["text"] and "CPU" not in rec["text"]
    cpu = b.recommend(b.totals([row("A", "sdpa.default", 1.0), row("A", "reference.int8qk-fp8pv", 40.0)], {"A": 1}),
                      "cpu")
    assert cpu["backend"] == "off" and "CPU timings" in cpu["text"]
    none = b.recommend(b.totals([row("A", "sdpa.default", 1.0)], {"A": 1}), "cpu")
    assert none["backend"] == "off" and "no quantized kernel" in none["text"]


def test_recommend_never_names_the_reference_emulation_even_when_it_timed_faster():
    # CPU timings are noisy; the reference backend is a numerics check, never a speed setting
    rows = [row("A", "sdpa.default", 2.0, 0.002), row("A", "reference.int8qk-fp16pv", 1.0, 0.009)]
    rec = b.recommend(b.totals(rows, {"A": 1}), "cpu")
    assert rec["backend"] == "off" and "backend reference" not in rec["text"]


def test_bar_lengths_are_proportional():
    assert b.bar_lengths([1.0, 2.0, 4.0, None, 0.0], 400) == [100, 200, 400, 0, 0]
    assert b.bar_lengths([0.001, 1000.0], 100) == [1, 100]  # a tiny value is still visible
    assert b.bar_lengths([], 100) == []


def test_chart_draws_one_bar_per_timed_variant_in_its_colour():
    entries = b.totals([row("A", "sdpa.default", 2.0, 0.002), row("A", "reference.int8qk-fp8pv", 1.0, 0.038),
                        row("A", "reference.int4qk-fp8pv", 4.0, 0.3), row("A", "cuda.x", None, None, error="e")],
                       {"A": 1})
    img = b.chart(entries, "test")
    shown = [e for e in entries if e["total_ms"] is not None]
    assert img.shape == (1, b.TOP + b.ROW_HEIGHT * len(shown) + 10, b.CHART_WIDTH, 3)
    bar_width = b.CHART_WIDTH - b.LABEL_WIDTH - b.VALUE_WIDTH
    px = (img[0] * 255).round().to(torch.uint8)
    for i, (entry, length) in enumerate(zip(shown, b.bar_lengths([e["total_ms"] for e in shown], bar_width))):
        y = b.TOP + i * b.ROW_HEIGHT + b.ROW_HEIGHT // 2
        assert tuple(px[y, b.LABEL_WIDTH].tolist()) == b.bar_color(entry)  # the bar starts here
        assert tuple(px[y, b.LABEL_WIDTH + length - 1].tolist()) == b.bar_color(entry)  # and ends here
        assert tuple(px[y, b.LABEL_WIDTH + length + 1].tolist()) == b.COLORS["background"]
    colours = [b.bar_color(e) for e in shown]
    assert colours == [b.COLORS["quantized"], b.COLORS["sdpa"], b.COLORS["gated"]]  # sorted by time


def test_format_table_names_shapes_totals_and_the_recommendation():
    shapes = [(b.CallShape(2, 2, 32, 32, 128, "bfloat16"), 4)]
    rows = [dict(row("2x2x32x128", "sdpa.default", 1.0), dims="2x2x32x128", tflops=None, cos=1.0)]
    entries = b.totals(rows, {"2x2x32x128": 4})
    text = b.format_table(shapes, rows, entries, b.recommend(entries, "cpu"), "cpu", "one step")
    assert "2x2x32x128" in text and "x4" in text and "4.000" in text and "recommended:" in text
    assert "CPU wall-clock" in text


def test_bench_times_on_the_cpu_when_asked_and_takes_cross_attention_shapes():
    shape = bench.Shape("x", 1, 1, 16, 64, kv_tokens=8)
    rows = bench.run([shape], torch.device("cpu"), select=lambda n: n in ("sdpa.default", "reference.int8qk-fp8pv"),
                     progress=False, cpu_timing=True, warmup_ms=1.0, rep_ms=1.0)
    assert {r["variant"] for r in rows} == {"sdpa.default", "reference.int8qk-fp8pv"}
    assert all(r["ms"] > 0 and r["rel_l1"] is not None for r in rows), rows
    assert next(r for r in rows if r["variant"] == "sdpa.default")["rel_l1"] < 0.01  # bf16 SDPA vs float32
    untimed = bench.run([shape], torch.device("cpu"), select=lambda n: n == "sdpa.default", progress=False)
    assert untimed[0]["ms"] is None, "the command line's CPU table stays accuracy-only"


def test_machine_summary_on_this_host():
    s = b.machine_summary(torch.device("cpu"))
    assert s["device"] == "cpu" and "CPU" in s["auto"]
    assert s["backends"]["reference"]["available"] and s["backends"]["reference"]["default_variant"]
    assert set(s["backends"]) == {"cuda", "triton", "reference"}


def test_status_route_payload_is_strict_json_with_the_tracked_nodes():
    import json

    import routes
    from comfy_sage.comfy import stats as st

    s = st.Stats()
    s.begin_call(object())
    s.add((1, 2, 32, 32, 128, "bfloat16"), OURS, backend="reference")
    s.add((1, 2, 32, 12, 128, "bfloat16"), "with masks")
    st.track("42", s)
    payload = json.loads(json.dumps(routes.status_payload(), allow_nan=False))
    node = payload["nodes"]["42"]
    assert node["last_run"]["calls"] == 2 and node["last_run"]["ours"] == 1
    assert node["last_run"]["fallback"] == {"with masks": 1} and node["last_run"]["backends"] == {"reference": 1}
    assert payload["info"]["comfy_sage"] and "auto" in payload["machine"]
    assert routes.register() is False, "outside a host there is no server to register on"
