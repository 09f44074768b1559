"""The ComfyUI nodes of comfy-sage (V3 schema). Thin: parse widgets, call ``comfy_sage``.

Host facts read here and nowhere else (``comfy_sage`` never imports ComfyUI): the model's
sampling (schedule percents to sigmas), its block layout, whether ComfyUI already runs
``--use-sage-attention``.
"""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from comfy_sage.comfy import NODE_VARIANTS, NodeBackend, PatchConfig
from comfy_sage.comfy.override import OVERRIDE_KEY, chain
from comfy_sage.comfy.stats import track
from comfy_sage.config import QKGranularity

logger = logging.getLogger("comfy_sage")

AUTO = "auto"
# Wan image-to-video: CLIP-vision image tokens (257; 514 for first-last-frame). Those cross-
# attention calls keep the host attention: quantized attention there produced NaNs, and hosts
# older than the low_precision_attention keyword (ComfyUI 0.8.0 among them) do not flag them.
_WAN_IMAGE_TOKENS = frozenset({257, 514})


def _host_uses_sage() -> bool:
    try:
        import comfy.model_management as mm
    except ImportError:
        return False
    enabled = getattr(mm, "sage_attention_enabled", None)
    return bool(enabled()) if callable(enabled) else False


def _schedule_sigmas(model, start_percent: float, end_percent: float) -> dict:
    if start_percent <= 0.0 and end_percent >= 1.0:
        return {}
    sampling = model.get_model_object("model_sampling")
    out = {"sigma_end": float(sampling.percent_to_sigma(end_percent))}
    if start_percent > 0.0:
        out["sigma_start"] = float(sampling.percent_to_sigma(start_percent))
    return out


def _model_layout(model) -> dict:
    diffusion_model = getattr(model.model, "diffusion_model", None)
    if diffusion_model is None:
        return {}
    out = {}
    if len(getattr(diffusion_model, "single_blocks", None) or ()) > 0:
        out["last_stage_type"] = "single"  # Flux, Chroma, HunyuanVideo: double blocks, then single
    if any(type(m).__name__ == "WanI2VCrossAttention" for m in diffusion_model.modules()):
        out["exact_kv_lengths"] = _WAN_IMAGE_TOKENS
    return out


def _model_depth(model) -> tuple:
    """Block counts of the model's stages, as the host reports block_index/total_blocks: (all,) or,
    for models with a final "single" stage, (first stage, single stage); () when unknown."""
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    single = len(getattr(diffusion_model, "single_blocks", None) or ())
    for name in ("double_blocks", "joint_blocks", "transformer_blocks", "blocks", "layers"):
        blocks = getattr(diffusion_model, name, None)
        if blocks is not None and hasattr(blocks, "__len__") and len(blocks) > 0:
            return (len(blocks), single) if single else (len(blocks),)
    return ()


def _warn_if_inactive(model, start_percent, end_percent, first_blocks, last_blocks) -> None:
    """Settings under which the node would change nothing: say so when the model is patched."""
    if start_percent == end_percent:
        logger.warning("comfy_sage: Sage Attention with start_percent = end_percent (%s) quantizes no sampling "
                       "step: the model keeps ComfyUI's attention; widen the window", start_percent)
    depth = _model_depth(model)
    if not (first_blocks or last_blocks) or not depth:
        return
    covered = (first_blocks >= depth[0] and last_blocks >= depth[1]) if len(depth) == 2 else \
        first_blocks + last_blocks >= depth[0]
    if covered:
        logger.warning("comfy_sage: Sage Attention with full_precision_first_blocks=%d and "
                       "full_precision_last_blocks=%d covers all %s blocks of this model: it keeps ComfyUI's "
                       "attention everywhere; lower them", first_blocks, last_blocks, "+".join(map(str, depth)))


class SageAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SageAttention",
            display_name="Sage Attention",
            description="Replaces the model's attention with comfy-sage's quantized attention (SageAttention: INT8 "
                        "Q·Kᵀ, FP8/FP16/INT8 P·V). Returns a patched copy; the input model is not changed. Calls it "
                        "cannot take (masks, float32, unsupported shapes) keep ComfyUI's attention.",
            category="sage",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch. Text encoders and VAEs are never touched."),
                io.Combo.Input(
                    "backend", options=[b.value for b in NodeBackend], default=NodeBackend.AUTO.value,
                    tooltip="auto: the quantized kernel wherever it was measured faster than PyTorch attention "
                            "on this GPU, ComfyUI's attention everywhere else (the CPU included). cuda / triton: "
                            "force that kernel family (a warning says when it cannot run). reference: pure-PyTorch "
                            "emulation (slow; for checking quality). off: pass the model through unchanged (A/B "
                            "comparisons)."),
                io.Combo.Input(
                    "variant", options=[AUTO, *NODE_VARIANTS], default=AUTO,
                    tooltip="Quantization of the two matrix products. auto: with backend auto, the variant measured "
                            "fastest on this GPU for each call's shape; with a forced backend, its default "
                            "(int8qk-fp8pv). "
                            "int8qk-fp8pv: INT8 Q·K, FP8 P·V (SageAttention2). int8qk-fp16pv: FP16 P·V (more "
                            "accurate, slower on Ada/Hopper). int8qk-int8pv: INT8 P·V. int8qk-fp8-acc16pv: FP8 P·V "
                            "with FP16 block sums (SageAttention2++: twice the FP32-accumulate rate on RTX 40/50; on H100/H200 "
                            "the fastest at video sizes, 192-key blocks). Change it only if the "
                            "output shows artifacts or to compare speed."),
                io.Combo.Input(
                    "qk_granularity", options=[AUTO, *(g.value for g in QKGranularity)], default=AUTO,
                    tooltip="How many tokens share one INT8 scale for Q and K. auto: the backend's default "
                            "(per_thread). per_thread: finest, most accurate; per_warp / per_block: coarser, "
                            "marginally faster, slightly less accurate."),
                io.Boolean.Input(
                    "smooth_k", default=True,
                    tooltip="Subtract K's mean over tokens before quantizing (exact for softmax, large accuracy "
                            "gain). Leave on."),
                io.Boolean.Input(
                    "smooth_q", default=False,
                    tooltip="Also smooth Q per block (SageAttention2). Try it if a model shows quantization "
                            "artifacts; costs a little speed."),
                io.Float.Input(
                    "start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Fraction of the sampling schedule (by sigma, as ComfyUI's other percent inputs) at "
                            "which quantized attention starts. Raise it (e.g. 0.1) to keep the first, "
                            "composition-defining steps exact."),
                io.Float.Input(
                    "end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Fraction of the schedule after which ComfyUI's attention runs again. Lower it to "
                            "render the final detail steps exactly."),
                io.Int.Input(
                    "full_precision_first_blocks", default=0, min=0, max=256,
                    tooltip="Keep ComfyUI's attention in the first N transformer blocks (DiT models). Raise to "
                            "1-2 if the image loses structure."),
                io.Int.Input(
                    "full_precision_last_blocks", default=0, min=0, max=256,
                    tooltip="Keep ComfyUI's attention in the last N transformer blocks (DiT models). Raise to "
                            "1-2 if fine detail degrades."),
                io.Boolean.Input(
                    "allow_compile", default=True,
                    tooltip="Let torch.compile (e.g. the TorchCompileModel node) trace through the quantized "
                            "attention. Turn off if compilation fails: attention then runs outside the graph."),
                io.Boolean.Input(
                    "nan_guard", default=False,
                    tooltip="Check inputs for NaN/Inf before each call and use ComfyUI's attention for such calls "
                            "(warns once). Costs a little speed; turn on if outputs go black."),
            ],
            outputs=[io.Model.Output(tooltip="A patched copy of the model using quantized attention.")],
            hidden=[io.Hidden.unique_id],  # the web extension shows this node's statistics (routes.py)
        )

    # No validate_inputs: ComfyUI checks every input's min/max/options only for inputs that a
    # validate_inputs neither names nor takes through **kwargs. start > end, which needs both
    # values, is one error from execute().

    @classmethod
    def execute(cls, model, backend, variant, qk_granularity, smooth_k, smooth_q, start_percent, end_percent,
                full_precision_first_blocks, full_precision_last_blocks, allow_compile, nan_guard) -> io.NodeOutput:
        if start_percent > end_percent:
            raise ValueError(f"Sage Attention: start_percent ({start_percent}) must not exceed end_percent "
                             f"({end_percent})")
        if backend == NodeBackend.OFF.value:
            return io.NodeOutput(model)
        _warn_if_inactive(model, start_percent, end_percent, full_precision_first_blocks, full_precision_last_blocks)
        config = PatchConfig.from_widgets(
            backend, variant, qk_granularity, smooth_k=smooth_k, smooth_q=smooth_q,
            full_precision_first=full_precision_first_blocks, full_precision_last=full_precision_last_blocks,
            allow_compile=allow_compile, nan_guard=nan_guard, host_uses_sage=_host_uses_sage(),
            **_schedule_sigmas(model, start_percent, end_percent), **_model_layout(model),
        )
        if config.host_uses_sage:
            logger.warning("comfy_sage: ComfyUI runs with --use-sage-attention; the Sage Attention node leaves "
                           "attention to it (restart without the flag to use this node)")
        model = model.clone()
        topts = model.model_options.setdefault("transformer_options", {})
        override = chain(topts.get(OVERRIDE_KEY), config)
        if hasattr(model, "set_model_optimized_attention"):
            model.set_model_optimized_attention(override)
        else:
            topts[OVERRIDE_KEY] = override
        track(getattr(cls.hidden, "unique_id", None), override.stats)
        return io.NodeOutput(model)


# ============================================================================================
# Timing and comparison nodes (issue 11): Sage Compare Sampler, Sage Benchmark.
# The arithmetic and the report live in comfy_sage/comfy/compare.py and benchmark.py; here only
# what needs the host: sampling, the progress bar, the VAE, the device.
# ============================================================================================
_NO_SAGE = ("model: no Sage Attention patch found; connect the output of a Sage Attention node (its input model "
            "is the baseline) or a patched model to sage_model_2")
SHAPES_ONE_STEP = "one sampling step"
SHAPES_PREVIOUS_RUN = "previous run"


def _attention_device(model):
    import comfy.model_management as mm

    return getattr(model, "load_device", None) or mm.get_torch_device()


def _without_sage(model):
    """The model with any Sage Attention override taken out (an override chained under ours stays)."""
    from comfy_sage.comfy import find

    topts = model.model_options.get("transformer_options", {})
    ours = find(topts)
    return topts.get(OVERRIDE_KEY) if ours is None else ours.previous


def _with_override(model, fn):
    model = model.clone()
    topts = model.model_options.setdefault("transformer_options", {})
    if fn is None:
        topts.pop(OVERRIDE_KEY, None)
    else:
        topts[OVERRIDE_KEY] = fn
    return model


def _sage_label(override, index: int) -> str:
    config = getattr(override, "config", None)
    describe = getattr(config, "describe", None)
    if describe is None:
        return f"sage #{index}"
    d = describe()
    return f"sage #{index}: {d.get('backend')}/{d.get('variant') or 'auto'}"


def _sync(device):
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def _decode(vae, samples):
    images = vae.decode(samples)
    if images.ndim == 5:  # video VAEs return (B, T, H, W, C); frames one after another, as VAEDecode does
        images = images.reshape(-1, *images.shape[-3:])
    return images.float().cpu()


class SageCompareSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        import comfy.samplers

        return io.Schema(
            node_id="SageCompareSampler",
            display_name="Sage Compare Sampler",
            description="Samples like KSampler once with ComfyUI's own attention and once per Sage setting, from the "
                        "same noise, and reports how much faster each was and how much the result changed "
                        "(latent and, with a VAE, decoded frames).",
            category="sage",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="A model patched by a Sage Attention node. The baseline samples this "
                                                "model with the Sage patch taken out (ComfyUI's attention); "
                                                "everything else (LoRAs, other patches) stays."),
                io.Conditioning.Input("positive", tooltip="The conditioning describing what to include, as for "
                                                          "KSampler."),
                io.Conditioning.Input("negative", tooltip="The conditioning describing what to exclude, as for "
                                                          "KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise, as for KSampler."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The noise seed; every run uses the same noise."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps of each run."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as for KSampler."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="The sampling algorithm, as for KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                               tooltip="The noise schedule, as for KSampler."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the latent is denoised, as for KSampler."),
                io.Boolean.Input("warmup", default=True,
                                 tooltip="Run one untimed step per setting first, so that loading the model and "
                                         "compiling kernels (triton) are not counted in the first timed run."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional: decode every run's latent to compare frames (PSNR, SSIM) and "
                                     "show them side by side."),
                io.Model.Input("sage_model_2", optional=True,
                               tooltip="Optional: another Sage Attention output of the same model, a second "
                                       "setting to compare."),
                io.Model.Input("sage_model_3", optional=True,
                               tooltip="Optional: a third Sage setting to compare."),
            ],
            outputs=[
                io.Latent.Output("baseline_latent", tooltip="The latent sampled with ComfyUI's attention."),
                io.Latent.Output("sage_latent", tooltip="The latent sampled with the first Sage setting."),
                io.Image.Output("difference_heatmap",
                                tooltip="|Sage - baseline| per latent pixel, one image per frame and setting; "
                                        "black: no change, white: the largest difference (the report gives it)."),
                io.Image.Output("frames_side_by_side",
                                tooltip="Per frame: baseline, then each Sage setting, left to right (decoded with "
                                        "the VAE; without one, the first three latent channels)."),
                io.String.Output("report", tooltip="Speed-ups, attention calls quantized and fallen back, memory, "
                                                   "and the differences, as text."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                warmup, vae=None, sage_model_2=None, sage_model_3=None) -> io.NodeOutput:
        import time

        import comfy.model_management as mm
        import comfy.sample
        import comfy.utils

        from comfy_sage.comfy import compare, find

        sage_models = [m for m in (model, sage_model_2, sage_model_3) if m is not None]
        overrides = [find(m.model_options.get("transformer_options", {})) for m in sage_models]
        sage_models = [m for m, o in zip(sage_models, overrides) if o is not None]
        overrides = [o for o in overrides if o is not None]
        if not overrides:
            raise ValueError(_NO_SAGE)
        for m in sage_models:
            if not m.is_clone(model):
                raise ValueError("sage_model_2/3: must be Sage Attention outputs of the same model as `model`")

        latent = latent_image["samples"]
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        device = _attention_device(model)
        runs = [("ComfyUI attention (baseline)", model, None)]
        runs += [(_sage_label(o, i + 1), m, o) for i, (m, o) in enumerate(zip(sage_models, overrides))]
        pbar = comfy.utils.ProgressBar(steps * len(runs) + (len(runs) if warmup else 0))

        def sample(patched, n_steps, on_step):
            return comfy.sample.sample(patched, noise, n_steps, cfg, sampler_name, scheduler, positive, negative,
                                       latent, denoise=denoise, noise_mask=latent_image.get("noise_mask"),
                                       callback=lambda *a: on_step(), disable_pbar=True, seed=seed)

        mm.load_models_gpu([model])
        results, latents = [], []
        for label, patched, override in runs:
            inner = _without_sage(model) if override is None else override
            timer = compare.AttentionTimer(inner)
            patched = _with_override(patched, timer)
            if warmup:
                sample(patched, 1, lambda: pbar.update(1))
            timer.calls, timer.seconds = 0, 0.0
            if override is not None:
                override.stats.reset()
            meter = compare.VramMeter(device)
            meter.start()
            _sync(device)
            start = time.perf_counter()
            out = sample(patched, steps, lambda: pbar.update(1))
            _sync(device)
            wall = time.perf_counter() - start
            results.append(compare.RunResult(
                label=label, wall_s=wall, attention_s=timer.seconds, attention_calls=timer.calls, **meter.stop(),
                settings=None if override is None else override.config.describe(),
                stats=None if override is None else _run_stats(override.stats.snapshot())))
            latents.append(out.float().cpu())

        heat, scale = compare.heatmaps(latents[1:], latents[0])
        base_images = sage_images = None
        if vae is not None:
            decoded = [_decode(vae, x) for x in latents]
            base_images, sage_images = decoded[0], decoded[1:]
            frames = compare.side_by_side(decoded)
        else:
            frames = compare.latent_preview(latents)
        extra = {"seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler_name, "scheduler": scheduler,
                 "denoise": denoise, "warmup": warmup, "vae": vae is not None}
        report = compare.build_report(results[0], results[1:], latents[0], latents[1:], device=str(device),
                                      heatmap_scale=scale, base_images=base_images, sage_images=sage_images,
                                      extra=extra)
        text = compare.format_report(report)
        out_latents = [dict(latent_image, samples=x) for x in latents[:2]]
        return io.NodeOutput(out_latents[0], out_latents[1], heat, frames, text,
                             ui={"sage_report": [compare.json_safe(report)], "text": [text]})


def _run_stats(snapshot: dict) -> dict:
    """The statistics of the run just sampled: the override's totals since the reset before it."""
    total = snapshot.get("total") or {}
    return {key: total.get(key) for key in ("calls", "ours", "fallback", "backends")}


class SageBenchmark(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SageBenchmark",
            display_name="Sage Benchmark",
            description="Finds the attention shapes a model calls with, times every attention backend and variant "
                        "available on this machine on exactly those shapes (accuracy against float32 included), "
                        "and recommends a Sage Attention setting.",
            category="sage",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model to benchmark (patched by Sage Attention or not)."),
                io.Combo.Input("shapes_from", options=[SHAPES_ONE_STEP, SHAPES_PREVIOUS_RUN], default=SHAPES_ONE_STEP,
                               tooltip="one sampling step: run one step here (needs positive and latent_image). "
                                       "previous run: the shapes a Sage Attention node recorded while this model "
                                       "last sampled (run a sampler with it first)."),
                io.Int.Input("max_shapes", default=4, min=1, max=32,
                             tooltip="Benchmark only this many shapes, those with the most attention work."),
                io.Float.Input("rep_ms", default=200.0, min=10.0, max=5000.0, step=10.0,
                               tooltip="Milliseconds each variant is timed per shape (the median call is taken)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Conditioning for the one sampling step."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Connect it when your sampler uses CFG above 1: the model then runs "
                                              "with a batch of two, and the shapes change."),
                io.Latent.Input("latent_image", optional=True,
                                tooltip="The latent size to benchmark at (e.g. your Empty Latent node)."),
            ],
            outputs=[
                io.String.Output("table", tooltip="Shapes, every variant's time and accuracy, and the totals."),
                io.Image.Output("chart", tooltip="Each variant's total attention time as a bar chart."),
                io.String.Output("recommended", tooltip="The Sage Attention setting to use for this model here."),
            ],
        )

    @classmethod
    def execute(cls, model, shapes_from, max_shapes, rep_ms, positive=None, negative=None,
                latent_image=None) -> io.NodeOutput:
        import comfy.sample

        from comfy_api.latest import ui

        from comfy_sage import bench
        from comfy_sage.comfy import benchmark, find

        if shapes_from == SHAPES_PREVIOUS_RUN:
            override = find(model.model_options.get("transformer_options", {}))
            if override is None:
                raise ValueError("shapes_from 'previous run': the model has no Sage Attention patch to have recorded "
                                 "shapes; connect a Sage Attention output, or use 'one sampling step'")
            snap = override.stats.snapshot()
            counts = benchmark.shapes_from_stats(snap.get("run") if (snap.get("run") or {}).get("calls")
                                                 else snap.get("last_run"))
            source = "shapes recorded by the previous run, calls per run"
        else:
            if positive is None or latent_image is None:
                raise ValueError("shapes_from 'one sampling step': connect positive and latent_image")
            recorder = benchmark.ShapeRecorder(_without_sage(model))
            latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
            noise = comfy.sample.prepare_noise(latent, 0, latent_image.get("batch_index"))
            cfg = 1.0 if negative is None else 2.0  # any CFG above 1 batches cond and uncond, as the user's run
            comfy.sample.sample(_with_override(model, recorder), noise, 1, cfg, "euler", "simple", positive,
                                positive if negative is None else negative, latent, denoise=1.0,
                                disable_pbar=True, seed=0)
            counts = recorder.counts
            source = "shapes of one sampling step, calls per step"
        if not counts:
            raise ValueError("no attention call was recorded: the model made no unmasked attention call "
                             "(or 'previous run' found no run)")
        shapes = benchmark.top_shapes(counts, max_shapes)
        device = _attention_device(model)
        dtype = _bench_dtype(shapes[0][0].dtype)
        rows = bench.run([s.bench_shape() for s, _ in shapes], device, dtype=dtype, rep_ms=rep_ms,
                         warmup_ms=min(100.0, rep_ms), progress=False, cpu_timing=device.type != "cuda")
        entries = benchmark.totals(rows, {s.label(): n for s, n in shapes})
        rec = benchmark.recommend(entries, str(device))
        table = benchmark.format_table(shapes, rows, entries, rec, str(device), source)
        image = benchmark.chart(entries, f"attention ms ({source}) on {device}")
        data = {"device": str(device), "source": source,
                "shapes": [{"label": s.label(), "dtype": s.dtype, "calls": n} for s, n in shapes],
                "variants": entries, "recommended": rec}
        from comfy_sage.comfy.compare import json_safe

        # The chart is saved as a preview image but sent under our own key: the web extension shows it
        # in the node's panel; under "images" the frontend would draw it a second time below.
        chart_files = ui.PreviewImage(image, cls=cls).as_dict()["images"]
        return io.NodeOutput(table, image, rec["text"],
                             ui={"sage_chart": chart_files, "sage_benchmark": [json_safe(data)], "text": [table]})


def _bench_dtype(name: str):
    import torch

    # The quantized kernels take fp16/bf16; a model running in float32 (CPU hosts) is timed in
    # bf16, what it would run in on a GPU.
    return torch.float16 if name == "float16" else torch.bfloat16


class SageExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


NODES: list[type[io.ComfyNode]] = [SageAttention, SageCompareSampler, SageBenchmark]


async def comfy_entrypoint() -> SageExtension:
    return SageExtension()
