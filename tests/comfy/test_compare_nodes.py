"""Sage Compare Sampler and Sage Benchmark inside a real ComfyUI: a tiny random-weight Wan 2.1
model (video latent, 2 latent frames) and a tiny random-weight TAEHV video VAE, on the CPU in
bfloat16 (``backend=reference``: the quantization is emulated, so the Sage runs really differ).

The report's numbers are recomputed here from the returned latents and images with plain torch,
independently of ``comfy_sage.comfy.compare``."""

from __future__ import annotations

import math

import pytest
import torch

import tiny_models as tm
from comfy_sage.comfy import find

NODE = dict(backend="reference", variant="auto", qk_granularity="auto", smooth_k=True, smooth_q=False,
            start_percent=0.0, end_percent=1.0, full_precision_first_blocks=0, full_precision_last_blocks=0,
            allow_compile=True, nan_guard=False)
STEPS = 2


@pytest.fixture(scope="module")
def wan_file(host, tmp_path_factory):
    return tm.write(host, tm.SPECS["wan21_t2v"], tmp_path_factory.mktemp("compare_models"))


@pytest.fixture
def wan(host, bf16_on_cpu, wan_file):
    spec = tm.SPECS["wan21_t2v"]
    return spec, tm.load(host, spec, wan_file)


def tiny_video_vae(host):
    """A TAEHV (the host's tiny video VAE class) with random weights, loaded through comfy.sd.VAE
    (which detects it from its keys: 16 latent channels, float32 weights = no latent scaling)."""
    from comfy.taesd.taehv import TAEHV

    model = TAEHV(latent_channels=16, latent_format=None)
    sd = {k: v.float() for k, v in tm.random_state_dict(model, seed=3).items()}
    return host.sd.VAE(sd=sd)


def nodes(host):
    m = host.nodes.NODE_CLASS_MAPPINGS
    return m["SageAttention"], m["SageCompareSampler"], m["SageBenchmark"]


def patch(host, patcher, **kw):
    sage, _, _ = nodes(host)
    return sage.execute(model=patcher, **dict(NODE, **kw)).result[0]


def compare_inputs(spec, **kw):
    positive, negative = tm.conditioning(spec, seed=0)
    inputs = dict(positive=positive, negative=negative, latent_image={"samples": torch.zeros(spec.latent)}, seed=7,
                  steps=STEPS, cfg=spec.cfg, sampler_name="euler", scheduler="simple", denoise=1.0, warmup=False)
    return {**inputs, **kw}


def frames_of(latent):  # (B, C, T, H, W) -> (B*T, C, H, W), written out independently of compare.py
    return [latent[b, :, t] for b in range(latent.shape[0]) for t in range(latent.shape[2])]


def test_compare_sampler_report_matches_the_returned_latents(host, wan):
    spec, patcher = wan
    _, compare_node, _ = nodes(host)
    patched = patch(host, patcher)
    vae = tiny_video_vae(host)
    out = compare_node.execute(model=patched, vae=vae, **compare_inputs(spec))
    base, sage, heat, frames, text = out.result
    report = out.ui["sage_report"][0]

    # types and shapes
    assert base["samples"].shape == sage["samples"].shape == spec.latent
    n_frames = spec.latent[0] * spec.latent[2]
    assert heat.shape == (n_frames, 256, 256, 3) and 0 <= heat.min() and heat.max() <= 1
    decoded = vae.decode(base["samples"])
    decoded = decoded.reshape(-1, *decoded.shape[-3:])
    assert frames.ndim == 4 and frames.shape[0] == decoded.shape[0] == 5, "TAEHV: 2 latent frames decode to 5"
    width = decoded.shape[2]
    assert frames.shape[2] == 2 * width + 4, "baseline | gap | sage"
    assert isinstance(text, str) and "speed-up" in text and "quantized" in text

    # the baseline is a plain host-attention run from the same noise: a KSampler of the unpatched model
    inputs = compare_inputs(spec)
    noise = torch.randn(spec.latent, generator=torch.Generator().manual_seed(7))
    expected_base = host.sample.sample(patcher, noise, STEPS, spec.cfg, "euler", "simple", inputs["positive"],
                                       inputs["negative"], inputs["latent_image"]["samples"], denoise=1.0,
                                       disable_pbar=True, seed=7)
    assert torch.equal(base["samples"], expected_base.float()), "baseline must equal sampling without the patch"
    assert not torch.equal(sage["samples"], base["samples"]), "the Sage run must use the quantized attention"

    # statistics of the Sage run: every call quantized on the reference backend, counted by the timer too
    run = report["runs"][0]
    assert run["stats"]["calls"] > 0 and run["stats"]["ours"] == run["stats"]["calls"]
    assert run["stats"]["backends"] == {"reference": run["stats"]["calls"]}
    assert run["attention_calls"] == run["stats"]["calls"] == report["baseline"]["attention_calls"]
    assert run["attention_s"] > 0 and report["baseline"]["attention_s"] > 0
    assert run["peak_bytes"] is None, "no CUDA device: no memory counters"

    # the report's numbers recomputed from the returned latents
    cmp = report["comparisons"][0]
    assert cmp["speedup"] == pytest.approx(report["baseline"]["wall_s"] / run["wall_s"], rel=1e-12)
    assert cmp["attention_speedup"] == pytest.approx(report["baseline"]["attention_s"] / run["attention_s"],
                                                     rel=1e-12)
    b, s = base["samples"].double(), sage["samples"].double()
    data_range = (b.max() - b.min()).item()
    assert cmp["latent"]["data_range"] == pytest.approx(data_range)
    for got, fb, fs in zip(cmp["latent"]["frames"], frames_of(b), frames_of(s)):
        assert got["rel_l1"] == pytest.approx(((fs - fb).abs().sum() / fb.abs().sum()).item(), rel=1e-9)
        assert got["cos"] == pytest.approx(torch.nn.functional.cosine_similarity(fs.flatten(), fb.flatten(), dim=0)
                                           .item(), rel=1e-9)
        mse = ((fs - fb) ** 2).mean().item()
        assert got["psnr"] == pytest.approx(10 * math.log10(data_range ** 2 / mse), rel=1e-9)
    # decoded frames: the PSNR recomputed from the side-by-side output's two halves
    left, right = frames[:, :, :width].double(), frames[:, :, width + 4:].double()
    for got, l, r in zip(cmp["decoded"]["frames"], left, right):
        assert got["psnr"] == pytest.approx(10 * math.log10(1.0 / ((r - l) ** 2).mean().item()), rel=1e-6)
        assert 0 < got["ssim"] < 1
    # the heatmap's brightest pixel is the largest channel-mean difference
    diff = (s - b).abs().mean(dim=1)
    assert report["heatmap_scale"] == pytest.approx(diff.max().item(), rel=1e-6)
    assert heat.sum(dim=-1).max() == pytest.approx(3.0)


def test_compare_sampler_two_settings_without_vae(host, wan):
    spec, patcher = wan
    _, compare_node, _ = nodes(host)
    first = patch(host, patcher, variant="int8qk-fp16pv")
    second = patch(host, patcher, variant="int8qk-int8pv")
    inputs = dict(compare_inputs(spec, warmup=True), steps=1)  # the warm-up step doubles each run: keep it short
    out = compare_node.execute(model=first, sage_model_2=second, **inputs)
    base, sage, heat, frames, text = out.result
    report = out.ui["sage_report"][0]
    n_frames = spec.latent[0] * spec.latent[2]
    assert [r["label"] for r in report["runs"]] == ["sage #1: reference/int8qk-fp16pv",
                                                    "sage #2: reference/int8qk-int8pv"]
    assert heat.shape[0] == 2 * n_frames, "one heatmap per frame and setting"
    assert frames.shape[0] == n_frames and frames.shape[2] == 3 * 256 + 2 * 4, "latent previews, three columns"
    assert all(c["decoded"] is None for c in report["comparisons"])
    # the stats were reset after the warm-up step: only the timed run's calls are counted
    assert report["runs"][0]["stats"]["calls"] == report["baseline"]["attention_calls"]
    assert "sage #2" in text


def test_compare_sampler_without_a_sage_patch_says_what_to_connect(host, wan):
    spec, patcher = wan
    _, compare_node, _ = nodes(host)
    with pytest.raises(ValueError, match="Sage Attention"):
        compare_node.execute(model=patcher, **compare_inputs(spec))


def test_benchmark_node_times_the_shapes_of_one_step(host, wan):
    spec, patcher = wan
    _, _, bench_node = nodes(host)
    positive, negative = tm.conditioning(spec, seed=0)
    out = bench_node.execute(model=patcher, shapes_from="one sampling step", max_shapes=2, rep_ms=10.0,
                             positive=positive, negative=negative, latent_image={"samples": torch.zeros(spec.latent)})
    table, chart, recommended = out.result
    data = out.ui["sage_benchmark"][0]
    # Wan 2.1 tiny: 32 video tokens (2 x 4 x 4 after 1x2x2 patches), 12 text tokens, 2 heads of 128,
    # cond and uncond batched (CFG 2): self-attention and cross-attention per block
    labels = [s["label"] for s in data["shapes"]]
    assert labels == ["2x2x32x128", "2x2x32x128 kv12"], labels
    assert all(s["calls"] == spec.unet_config["num_layers"] for s in data["shapes"])
    assert data["device"] == "cpu"
    variants = {v["variant"] for v in data["variants"]}
    assert "sdpa.default" in variants and "reference.int8qk-fp8pv" in variants
    assert all(v["total_ms"] is not None and v["total_ms"] > 0 for v in data["variants"]), data["variants"]
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and chart.shape[2] == 760
    assert "CPU timings" in recommended and "CPU wall-clock" in table
    assert out.ui["sage_chart"][0]["type"] == "temp", "the chart is saved for the web extension"


def test_benchmark_node_reads_the_shapes_of_the_previous_run(host, wan):
    spec, patcher = wan
    _, _, bench_node = nodes(host)
    patched = patch(host, patcher)
    tm.sample(host, patched, spec, steps=STEPS)
    out = bench_node.execute(model=patched, shapes_from="previous run", max_shapes=4, rep_ms=10.0)
    data = out.ui["sage_benchmark"][0]
    # per run: STEPS steps, each the same calls as in one step
    assert {s["label"]: s["calls"] for s in data["shapes"]} == {
        "2x2x32x128": STEPS * spec.unet_config["num_layers"], "2x2x32x128 kv12": STEPS * spec.unet_config["num_layers"]}
    assert find(patched.model_options["transformer_options"]) is not None
