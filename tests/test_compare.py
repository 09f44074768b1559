"""Known answers for the Sage Compare Sampler's arithmetic (comfy_sage/comfy/compare.py): no ComfyUI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from comfy_sage.comfy import compare as c


# -- PSNR -----------------------------------------------------------------------------------
def test_psnr_known_values():
    ref = torch.zeros(4, 4, dtype=torch.float64)
    # MSE 0.01 with range 1: 10·log10(1 / 0.01) = 20 dB exactly
    assert c.psnr(ref + 0.1, ref, 1.0) == pytest.approx(20.0, abs=1e-12)
    # range 2 adds 20·log10(2) = 6.0206 dB
    assert c.psnr(ref + 0.1, ref, 2.0) == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-12)
    # half the pixels off by 1: MSE 0.5 → 10·log10(2) = 3.0103 dB
    out = ref.clone()
    out[:2] = 1.0
    assert c.psnr(out, ref, 1.0) == pytest.approx(10 * math.log10(2), abs=1e-12)
    assert c.psnr(ref, ref, 1.0) == math.inf
    assert math.isnan(c.psnr(ref + float("nan"), ref, 1.0))


def test_psnr_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shapes differ"):
        c.psnr(torch.zeros(2), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        c.psnr(torch.zeros(2), torch.zeros(2), 0.0)


def test_mean_psnr_averages_the_errors_not_the_decibels():
    # 10 dB (MSE 0.1) and 30 dB (MSE 0.001): mean MSE 0.0505 → 12.967 dB, not 20 dB
    assert c._mean_psnr([10.0, 30.0]) == pytest.approx(-10 * math.log10(0.0505), abs=1e-9)
    assert c._mean_psnr([math.inf, math.inf]) == math.inf
    assert c._mean_psnr([math.inf, 20.0]) == pytest.approx(-10 * math.log10(0.005), abs=1e-9)


# -- SSIM -----------------------------------------------------------------------------------
def test_ssim_identical_images_is_one():
    img = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert c.ssim(img, img) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance anywhere: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01·1)²
    a, b = 0.2, 0.7
    c1 = (0.01) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    f64 = dict(dtype=torch.float64)
    got = c.ssim(torch.full((1, 16, 16, 1), b, **f64), torch.full((1, 16, 16, 1), a, **f64))
    assert got[0] == pytest.approx(expected, rel=1e-12)


def test_ssim_single_window_against_a_direct_formula():
    # An 11×11 image has exactly one valid window: compute Wang et al.'s formula with explicit
    # Gaussian weights in plain Python and compare.
    g = torch.Generator().manual_seed(1)
    x = torch.rand(11, 11, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(11, 11, generator=g, dtype=torch.float64)).clamp(0, 1)
    w1 = [math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)]
    s = sum(w1)
    w = [[w1[i] * w1[j] / (s * s) for j in range(11)] for i in range(11)]
    mx = sum(w[i][j] * x[i, j].item() for i in range(11) for j in range(11))
    my = sum(w[i][j] * y[i, j].item() for i in range(11) for j in range(11))
    vx = sum(w[i][j] * (x[i, j].item() - mx) ** 2 for i in range(11) for j in range(11))
    vy = sum(w[i][j] * (y[i, j].item() - my) ** 2 for i in range(11) for j in range(11))
    cov = sum(w[i][j] * (x[i, j].item() - mx) * (y[i, j].item() - my) for i in range(11) for j in range(11))
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    got = c.ssim(y[None, :, :, None], x[None, :, :, None])[0]
    assert got == pytest.approx(expected, rel=1e-9)


def test_ssim_small_images_use_a_smaller_window_and_inverted_images_score_negative():
    img = torch.rand(1, 6, 6, 1, generator=torch.Generator().manual_seed(2))
    assert c.ssim(img, img) == pytest.approx([1.0])  # window 5×5: still defined
    assert c.ssim(1 - img, img)[0] < 0  # structure reversed: negative correlation


# -- frames and latent metrics --------------------------------------------------------------
def test_latent_frames_video_is_batch_major():
    x = torch.arange(2 * 1 * 3 * 2 * 2).float().reshape(2, 1, 3, 2, 2)
    frames = c.latent_frames(x)
    assert frames.shape == (6, 1, 2, 2)
    assert torch.equal(frames[4], x[1, :, 1])  # frame 4 = batch 1, time 1
    assert c.latent_frames(torch.zeros(3, 4, 5, 5)).shape == (3, 4, 5, 5)
    with pytest.raises(ValueError, match="dimensions"):
        c.latent_frames(torch.zeros(3, 4))


def test_latent_metrics_known_values():
    base = torch.zeros(1, 2, 2, 2, 2)
    base[0, 0, :, 0, 0] = 2.0  # range 2 (min 0, max 2); each frame: one 2 among 8 values
    sage = base.clone()
    sage[0, 1, 1, 1, 1] = 0.2  # frame 1 changes by 0.2 in one of 8 values
    m = c.latent_metrics(sage, base)
    assert m["data_range"] == 2.0
    f0, f1 = m["frames"]
    assert f0 == {"cos": pytest.approx(1.0), "rel_l1": 0.0, "psnr": math.inf}
    assert f1["rel_l1"] == pytest.approx(0.2 / 2.0)
    assert f1["cos"] == pytest.approx(4.0 / (2.0 * math.sqrt(4.0 + 0.04)))
    assert f1["psnr"] == pytest.approx(10 * math.log10(4.0 / (0.04 / 8)))
    assert m["mean_rel_l1"] == pytest.approx(0.05)
    assert m["mean_psnr"] == pytest.approx(10 * math.log10(4.0 / (0.04 / 16)))  # mean MSE over both frames


def test_image_metrics_per_frame():
    base = torch.full((2, 12, 12, 3), 0.5, dtype=torch.float64)
    sage = base.clone()
    sage[1] += 0.1
    m = c.image_metrics(sage, base)
    assert m["frames"][0]["psnr"] == math.inf and m["frames"][0]["ssim"] == pytest.approx(1.0)
    assert m["frames"][1]["psnr"] == pytest.approx(20.0)
    c1 = 0.01**2
    assert m["frames"][1]["ssim"] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1))


# -- images ---------------------------------------------------------------------------------
def test_colormap_stops():
    got = c.colormap(torch.tensor([0.0, 1 / 3, 0.5, 2 / 3, 1.0, 2.0, -1.0]))
    expected = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0.5, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]],
                            dtype=torch.float32)
    assert torch.allclose(got, expected, atol=1e-6)


def test_heatmaps_one_scale_for_all_runs_and_upscaled():
    base = torch.zeros(1, 2, 4, 4)
    s1, s2 = base.clone(), base.clone()
    s1[0, :, 0, 0] = 1.0  # channel mean 1.0 at (0, 0)
    s2[0, 0, 3, 3] = 1.0  # channel mean 0.5 at (3, 3)
    img, scale = c.heatmaps([s1, s2], base)
    assert scale == 1.0
    assert img.shape == (2, 256, 256, 3)  # 4 × 64
    assert torch.equal(img[0, 0, 0], torch.ones(3))  # the largest difference is white
    assert torch.allclose(img[1, 255, 255], c.colormap(torch.tensor(0.5)))
    assert torch.equal(img[0, 100, 100], torch.zeros(3)) and torch.equal(img[0, 63, 63], torch.ones(3))
    same, zero = c.heatmaps([base], base)
    assert zero == 0.0 and torch.equal(same, torch.zeros_like(same))


def test_heatmap_marks_non_finite_differences_as_maximal():
    base = torch.zeros(1, 1, 2, 2)
    sage = base.clone()
    sage[0, 0, 0, 0] = float("nan")
    sage[0, 0, 1, 1] = 0.5
    img, scale = c.heatmaps([sage], base)
    assert scale == 0.5
    assert torch.equal(img[0, 0, 0], torch.ones(3))


def test_side_by_side_and_latent_preview():
    a, b = torch.zeros(2, 3, 4, 3), torch.full((2, 3, 4, 3), 0.5)
    out = c.side_by_side([a, b], gap=2)
    assert out.shape == (2, 3, 10, 3)
    assert torch.equal(out[:, :, 4:6], torch.ones(2, 3, 2, 3)) and torch.equal(out[:, :, 6:], b)
    with pytest.raises(ValueError, match="shapes differ"):
        c.side_by_side([a, b[:1]])
    base = torch.zeros(1, 4, 8, 8)
    preview = c.latent_preview([base, base + 1.0])
    assert preview.shape == (1, 256, 2 * 256 + 4, 3)
    assert preview[0, 0, 0].max() == 0.0 and preview[0, 0, -1].min() == 1.0  # one range for both runs


# -- timing, memory, speed-up ---------------------------------------------------------------
def test_attention_timer_counts_calls_and_chains():
    seen = []

    def host(q, k, v, heads, **kw):
        seen.append(("host", kw.get("flag")))
        return q + 1

    def inner(func, *args, **kw):
        seen.append("inner")
        return func(*args, **kw)

    timer = c.AttentionTimer(inner)
    assert copy.deepcopy({"t": timer})["t"] is timer, "clones of the model share one timer"
    q = torch.zeros(2)
    assert torch.equal(timer(host, q, q, q, 1, flag=3), q + 1)
    assert seen == ["inner", ("host", 3)]
    bare = c.AttentionTimer()
    bare(host, q, q, q, 1)
    bare(host, q, q, q, 1)
    assert (timer.calls, bare.calls) == (1, 2) and bare.seconds > 0


def test_speedup_arithmetic():
    assert c.speedup(2.0, 1.0) == 2.0
    assert c.speedup(1.0, 4.0) == 0.25
    assert c.speedup(None, 1.0) is None and c.speedup(1.0, 0.0) is None and c.speedup(0.0, 1.0) is None


def test_vram_bookkeeping_with_injected_counters():
    state = {"allocated": 1000, "peak": 5000, "resets": 0}

    def reset():
        state["resets"] += 1
        state["peak"] = state["allocated"]

    meter = c.VramMeter(allocated=lambda: state["allocated"], peak=lambda: state["peak"], reset_peak=reset)
    meter.start()
    assert state["resets"] == 1 and state["peak"] == 1000  # the earlier peak does not count
    state["peak"] = 1000 + 3 * 2**20  # the run needed 3 MiB more at its peak
    state["allocated"] = 1500
    assert meter.stop() == {"peak_bytes": 1000 + 3 * 2**20, "extra_bytes": 3 * 2**20}
    assert c.VramMeter("cpu").stop() == {"peak_bytes": None, "extra_bytes": None}
    assert not c.VramMeter("cpu").available


# -- the report -----------------------------------------------------------------------------
def test_report_numbers_and_text():
    base = torch.zeros(1, 1, 2, 2)
    base[0, 0, 0, 0] = 1.0
    sage = base.clone()
    sage[0, 0, 1, 1] = 0.1
    b_run = c.RunResult("baseline", wall_s=3.0, attention_s=2.0, attention_calls=10)
    s_run = c.RunResult("sage #1: reference/auto", wall_s=2.0, attention_s=0.5, attention_calls=10,
                        peak_bytes=3 * 2**20, extra_bytes=2**20,
                        stats={"calls": 10, "ours": 8, "fallback": {"with masks": 2}, "backends": {"reference": 8}})
    report = c.build_report(b_run, [s_run], base, [sage], device="cpu", heatmap_scale=0.1)
    cmp = report["comparisons"][0]
    assert cmp["speedup"] == 1.5 and cmp["attention_speedup"] == 4.0
    assert cmp["latent"]["frames"][0]["rel_l1"] == pytest.approx(0.1)
    assert report["frames"] == 1 and report["latent_shape"] == [1, 1, 2, 2]
    text = c.format_report(report)
    assert "1.50x" in text and "4.00x" in text and "8/10 quantized" in text
    assert "host attention: 2 call(s): with masks" in text and "3 MiB" in text
    assert "CPU timings" in text
    safe = c.json_safe(c.build_report(b_run, [s_run], base, [base.clone()], device="cpu"))
    json.loads(json.dumps(safe, allow_nan=False))  # identical latents: PSNR inf becomes "inf"
    assert safe["comparisons"][0]["latent"]["mean_psnr"] == "inf"
