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
                    tooltip="auto: on a GPU, the quantized kernel wherever it was measured faster than PyTorch "
                            "attention, ComfyUI's attention elsewhere; on the CPU the reference implementation. "
                            "cuda / triton: force that kernel family. reference: pure-PyTorch emulation (slow; for "
                            "checking quality). off: pass the model through unchanged (A/B comparisons)."),
                io.Combo.Input(
                    "variant", options=[AUTO, *NODE_VARIANTS], default=AUTO,
                    tooltip="Quantization of the two matrix products. auto: the backend's best for this GPU. "
                            "int8qk-fp8pv: INT8 Q·K, FP8 P·V (SageAttention2). int8qk-fp16pv: FP16 P·V (more "
                            "accurate, slower on Ada/Hopper). int8qk-int8pv: INT8 P·V. int8qk-fp8-acc16pv: FP8 P·V "
                            "with FP16 accumulation (SageAttention2++; made for RTX 40/50, whose FP8 tensor cores run it at "
                            "twice the FP32-accumulate rate). Change it only if the "
                            "output shows artifacts or to compare speed."),
                io.Combo.Input(
                    "qk_granularity", options=[AUTO, *(g.value for g in QKGranularity)], default=AUTO,
                    tooltip="How many tokens share one INT8 scale for Q and K. per_thread: finest, most accurate "
                            "(default); per_warp / per_block: coarser, marginally faster, slightly less accurate."),
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
        )

    @classmethod
    def validate_inputs(cls, start_percent: float = 0.0, end_percent: float = 1.0, **kwargs):
        if start_percent > end_percent:
            return f"start_percent ({start_percent}) must not exceed end_percent ({end_percent})"
        return True

    @classmethod
    def execute(cls, model, backend, variant, qk_granularity, smooth_k, smooth_q, start_percent, end_percent,
                full_precision_first_blocks, full_precision_last_blocks, allow_compile, nan_guard) -> io.NodeOutput:
        if backend == NodeBackend.OFF.value:
            return io.NodeOutput(model)
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
        return io.NodeOutput(model)


class SageExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


NODES: list[type[io.ComfyNode]] = [SageAttention]


async def comfy_entrypoint() -> SageExtension:
    return SageExtension()
