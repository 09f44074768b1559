"""Tiny random-weight diffusion models built from the host's own classes, written as
safetensors and loaded back through the host's loaders.

Wan 2.1 and HunyuanVideo load through ``comfy.sd.load_diffusion_model`` (the host's detection
reads their sizes from the weights: head dim 128, so a 256-wide model has 2 heads). Flux fixes
24 heads of 128 in its detection and SDXL matches on its full-size widths, so those two load
with an explicit ``comfy.supported_models`` config through the same steps the loader takes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

import torch

BF16 = torch.bfloat16


@dataclasses.dataclass
class Spec:
    name: str
    supported: str  # class name in comfy.supported_models
    unet_config: dict
    detect: bool  # load through comfy.sd.load_diffusion_model (host detection)
    latent: tuple  # latent shape, batch first
    context: tuple  # text conditioning shape (batch, tokens, dim)
    extra_cond: Callable = lambda: {}  # more conditioning keys (pooled output, clip vision, ...)
    # host module globals the model calls attention through (counted independently of the override)
    attention_modules: tuple = ()
    cfg: float = 2.0  # 1.0: one conditioning only (guidance-distilled models)


def _wan_i2v_extra():
    # Wan image-to-video: the CLIP-vision tokens (257 × 1280) and the concat latent + mask (20 ch).
    return {
        "clip_vision_output": _ClipVisionOutput(torch.randn(1, 257, 1280)),
        "concat_latent_image": torch.randn(1, 16, 2, 8, 8),
    }


class _ClipVisionOutput:
    def __init__(self, penultimate):
        self.penultimate_hidden_states = penultimate


SPECS = {
    "wan21_t2v": Spec(
        "wan21_t2v", "WAN21_T2V",
        dict(image_model="wan2.1", model_type="t2v", dim=256, ffn_dim=256, num_layers=2, num_heads=2,
             in_dim=16, out_dim=16, text_dim=4096, freq_dim=256),
        detect=True, latent=(1, 16, 2, 8, 8), context=(1, 12, 4096),
        attention_modules=("comfy.ldm.wan.model",),
    ),
    "wan21_i2v": Spec(
        "wan21_i2v", "WAN21_I2V",
        dict(image_model="wan2.1", model_type="i2v", dim=256, ffn_dim=256, num_layers=2, num_heads=2,
             in_dim=36, out_dim=16, text_dim=4096, freq_dim=256),
        detect=True, latent=(1, 16, 2, 8, 8), context=(1, 12, 4096), extra_cond=_wan_i2v_extra,
        attention_modules=("comfy.ldm.wan.model",),
    ),
    "hunyuan_video": Spec(
        "hunyuan_video", "HunyuanVideo",
        dict(image_model="hunyuan_video", in_channels=16, out_channels=16, patch_size=[1, 2, 2], vec_in_dim=768,
             context_in_dim=64, hidden_size=256, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=2,
             axes_dim=[16, 56, 56], theta=256, qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
             use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False),
        detect=True, latent=(1, 16, 2, 8, 8), context=(1, 12, 64),
        extra_cond=lambda: {"pooled_output": torch.randn(1, 768), "guidance": 6.0},
        attention_modules=("comfy.ldm.flux.math", "comfy.ldm.hunyuan_video.model"), cfg=1.0,
    ),
    "flux": Spec(
        "flux", "Flux",
        dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=64,
             hidden_size=256, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=2, axes_dim=[16, 56, 56],
             theta=10000, qkv_bias=True, guidance_embed=True, txt_ids_dims=[]),
        detect=False, latent=(1, 16, 16, 16), context=(1, 12, 64),
        extra_cond=lambda: {"pooled_output": torch.randn(1, 768), "guidance": 3.5},
        attention_modules=("comfy.ldm.flux.math",),
    ),
    "sdxl_unet": Spec(
        "sdxl_unet", "SDXL",
        dict(model_channels=32, use_linear_in_transformer=True, transformer_depth=[0, 1], channel_mult=[1, 2],
             num_res_blocks=[1, 1], transformer_depth_middle=1, transformer_depth_output=[0, 0, 1, 1],
             context_dim=64, adm_in_channels=2816, use_temporal_attention=False, in_channels=4, out_channels=4,
             num_head_channels=16, use_spatial_transformer=True, legacy=False, num_classes="sequential",
             image_size=32, use_temporal_resblock=False, dtype=BF16),
        detect=False, latent=(1, 4, 16, 16), context=(1, 12, 64),
        extra_cond=lambda: {"pooled_output": torch.randn(1, 1280), "width": 128, "height": 128},
        attention_modules=("comfy.ldm.modules.attention",),
    ),
}


def random_state_dict(model: torch.nn.Module, seed: int = 0) -> dict:
    """Weights with sane scales: unit norms, zero biases, fan-in-scaled matrices."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        leaf = name.rsplit(".", 1)[-1]
        if t.ndim == 1 and ("norm" in name or leaf == "scale"):
            value = torch.ones(t.shape)
        elif t.ndim == 1:
            value = torch.randn(t.shape, generator=gen) * 0.02
        else:
            fan_in = math.prod(t.shape[1:]) if t.ndim > 1 else t.shape[-1]
            value = torch.randn(t.shape, generator=gen) / math.sqrt(max(fan_in, 1))
        out[name] = value.to(BF16).contiguous()
    return out


def write(host, spec: Spec, folder: Path) -> Path:
    """Build the host's model for ``spec`` and save random weights as safetensors."""
    import comfy.supported_models as sm
    from safetensors.torch import save_file

    config = getattr(sm, spec.supported)(dict(spec.unet_config))
    config.set_inference_dtype(BF16, None)
    model = config.get_model({})
    sd = random_state_dict(model.diffusion_model)
    path = folder / f"{spec.name}.safetensors"
    save_file(sd, str(path))
    return path


def load(host, spec: Spec, path: Path):
    """Load through the host: its detecting loader, or an explicit config (see module doc)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models as sm
    import comfy.utils

    if spec.detect:
        patcher = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": BF16})
        assert type(patcher.model.model_config).__name__ == spec.supported, "host detected another model"
        return patcher
    sd = comfy.utils.load_torch_file(str(path))
    config = getattr(sm, spec.supported)(dict(spec.unet_config))
    load_device = mm.get_torch_device()
    manual_cast = mm.unet_manual_cast(BF16, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(BF16, manual_cast)
    model = config.get_model(sd, "")
    model = model.to(mm.unet_offload_device())
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())


def conditioning(spec: Spec, seed: int):
    torch.manual_seed(seed)
    positive = [[torch.randn(spec.context), spec.extra_cond()]]
    negative = [[torch.randn(spec.context), spec.extra_cond()]]
    return positive, negative


def sample(host, patcher, spec: Spec, steps: int = 3, seed: int = 0, cfg: Optional[float] = None,
           denoise: float = 1.0):
    """A few steps of the host's sampler (euler, simple schedule) from fixed noise."""
    import comfy.sample

    positive, negative = conditioning(spec, seed)
    latent = torch.zeros(spec.latent)
    noise = torch.randn(spec.latent, generator=torch.Generator().manual_seed(seed))
    cfg = spec.cfg if cfg is None else cfg
    return comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                               denoise=denoise, disable_pbar=True, seed=seed)


class AttentionCounter:
    """Counts every attention call the diffusion model makes through the host's dispatch, by
    wrapping the ``optimized_attention`` names of the model's modules (independent of the override)."""

    NAMES = ("optimized_attention", "optimized_attention_masked")

    def __init__(self, monkeypatch, modules):
        import importlib

        self.calls = []
        for module_name in modules:
            module = importlib.import_module(module_name)
            for name in self.NAMES:
                original: Optional[Callable] = getattr(module, name, None)
                if original is not None:
                    monkeypatch.setattr(module, name, self._wrap(original))

    def _wrap(self, original):
        def counted(*args, **kwargs):
            self.calls.append(kwargs)
            return original(*args, **kwargs)

        return counted
