"""End-to-end sampling steps inside a real ComfyUI: the host's attention vs the Sage Attention node
vs ComfyUI's own ``--use-sage-attention`` path (the public SageAttention, where it is installed).

Each model is built from ComfyUI's own class with random bf16 weights made on the GPU, handed to
the host's state-dict loader, and sampled (euler, simple) from identical noise and conditioning
once per mode. Reported per model and mode: per-step times (median after the first step, which
holds compilation and cuDNN planning), the first step's time, the attention share of a step (CUDA
events around every attention call: no synchronisation inside the step), peak VRAM, the latent's
divergence from the host's at every step (cos, rel-L1), and for the node its own counts of
quantized and fallen-back calls.

  GPU:  python bench/e2e.py --comfyui /path/to/ComfyUI --out bench/results/e2e-h200.json
  CPU dry run (tiny models, the reference backend):
        python bench/e2e.py --comfyui /path/to/ComfyUI --tiny --modes host,reference --out /tmp/e2e.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclasses.dataclass(frozen=True)
class Model:
    supported: str  # class name in comfy.supported_models
    unet_config: dict
    latent: tuple  # one sample's latent, batch first
    context: tuple  # text conditioning (batch, tokens, dim)
    extra: Callable = lambda g: {}  # extra conditioning, drawn from the run's generator g
    cfg: float = 5.0  # > 1: cond and uncond run as one batch of 2, as ComfyUI does


def _wan(dim, ffn, layers, frames, height, width):
    return Model("WAN21_T2V", dict(image_model="wan2.1", model_type="t2v", dim=dim, ffn_dim=ffn, num_layers=layers,
                                   num_heads=dim // 128, in_dim=16, out_dim=16, text_dim=4096, freq_dim=256),
                 latent=(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8), context=(1, 512, 4096))


def _flux(hidden, depth, single, side):
    import torch

    return Model("Flux", dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768,
                              context_in_dim=4096, hidden_size=hidden, mlp_ratio=4.0, num_heads=hidden // 128,
                              depth=depth, depth_single_blocks=single, axes_dim=[16, 56, 56], theta=10000,
                              qkv_bias=True, guidance_embed=True, txt_ids_dims=[]),
                 latent=(1, 16, side // 8, side // 8), context=(1, 512, 4096),
                 extra=lambda g: {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}, cfg=1.0)


def _sdxl(channels, depth, head_channels, side):
    import torch

    d = depth
    return Model("SDXL", dict(model_channels=channels, use_linear_in_transformer=True,
                              transformer_depth=[0, 0, d // 5, d // 5, d, d], channel_mult=[1, 2, 4],
                              num_res_blocks=[2, 2, 2], transformer_depth_middle=d,
                              transformer_depth_output=[0, 0, 0, d // 5, d // 5, d // 5, d, d, d],
                              context_dim=2048, adm_in_channels=2816, use_temporal_attention=False, in_channels=4,
                              out_channels=4, num_head_channels=head_channels, use_spatial_transformer=True,
                              legacy=False, num_classes="sequential", image_size=32, use_temporal_resblock=False),
                 latent=(1, 4, side // 8, side // 8), context=(1, 77, 2048),
                 extra=lambda g: {"pooled_output": torch.randn(1, 1280, generator=g), "width": side, "height": side}, cfg=5.0)


# The released sizes (Wan 2.1 14B/1.3B, Flux dev, SDXL base) at the resolutions users render.
MODELS = {
    "wan14b-480p": lambda: _wan(5120, 13824, 40, 81, 480, 832),
    "wan14b-720p": lambda: _wan(5120, 13824, 40, 81, 720, 1280),
    "wan1.3b-480p": lambda: _wan(1536, 8960, 30, 81, 480, 832),
    "flux-1024": lambda: _flux(3072, 19, 38, 1024),
    "sdxl-1024": lambda: _sdxl(320, 10, 64, 1024),
}
# Full width and depth at a small latent (5 frames, 128²: 128 tokens): the real model's
# activations at a size a CPU samples in minutes (the divergence floor, below).
SMALL = {
    "wan1.3b-small": lambda: _wan(1536, 8960, 30, 5, 128, 128),
}
TINY = {
    "wan": lambda: dataclasses.replace(_wan(256, 256, 2, 5, 64, 64), context=(1, 12, 4096)),
    "flux": lambda: dataclasses.replace(_flux(256, 1, 2, 128), context=(1, 12, 4096)),
    "sdxl": lambda: dataclasses.replace(_sdxl(64, 5, 32, 128), context=(1, 12, 2048)),
}
# mode -> the Sage Attention node's inputs (None: no node). "sageattention" is ComfyUI's own
# --use-sage-attention path (comfy.ldm.modules.attention.attention_sage, the public package).
MODES = {
    "host": None,
    "sageattention": None,
    "auto": dict(backend="auto", variant="auto"),
    # auto quantizes with the variant measured fastest per shape class (comfy_sage/dispatch.py); the
    # accurate mode is asked of the kernels
    "accurate": dict(backend="cuda", variant="int8qk-fp16pv"),
    # FP8 P·V with f16 block sums everywhere (auto's pick on sm_90 at head dim 128 from 32760 tokens,
    # causal from 8192, head dim 64 from 8192: comfy_sage/dispatch.py)
    "fp8-acc16": dict(backend="cuda", variant="int8qk-fp8-acc16pv"),
    "cuda": dict(backend="cuda", variant="auto"),
    "reference": dict(backend="reference", variant="auto"),
    "reference-accurate": dict(backend="reference", variant="int8qk-fp16pv"),
    # The host's attention on float32 copies, rounded back: more accurate than the host, and still
    # a perturbation at bf16's rounding step. Its divergence is the floor of any attention change:
    # on random-weight models one step moves the latent by ~0.8 % rel-L1 whatever the change's size.
    "fp32": None,
}
NODE_DEFAULTS = dict(qk_granularity="auto", smooth_k=True, smooth_q=False, start_percent=0.0, end_percent=1.0,
                     full_precision_first_blocks=0, full_precision_last_blocks=0, allow_compile=True,
                     nan_guard=False)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", required=True, help="path to a ComfyUI checkout")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--models", default="wan14b-480p,wan14b-720p,wan1.3b-480p,flux-1024,sdxl-1024",
                   help=f"comma-separated, from {','.join(MODELS)}, {','.join(SMALL)} (CPU-sized), "
                        f"or with --tiny: {','.join(TINY)}")
    p.add_argument("--modes", default="host,auto,accurate,sageattention", help=f"comma-separated, from {','.join(MODES)}")
    p.add_argument("--steps", type=int, default=4, help="steps per run; the first is the warm-up step")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs per mode, the modes alternating (host, auto, ..., host, auto, ...): the median "
                        "step pools every round's timed steps. Short image steps (~0.1 s) moved by ±6 %% "
                        "between consecutive runs, so one run per mode cannot tell a 1 %% difference")
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU dry run)")
    return p.parse_args(argv)


def import_host(comfyui: Path):
    sys.path.insert(0, str(comfyui))
    sys.modules.pop("nodes", None)  # this repository's nodes.py must not shadow the host's
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import torch

    if not torch.cuda.is_available():
        from comfy.cli_args import args

        args.cpu = True
    import comfy.model_management as mm

    if not torch.cuda.is_available():
        mm.should_use_bf16 = lambda *a, **kw: True  # as a GPU would; CPU hosts keep float32
    import nodes as host_nodes

    if not asyncio.run(host_nodes.load_custom_node(str(REPO), module_parent="custom_nodes")):
        raise SystemExit("ComfyUI's loader rejected this repository")
    return host_nodes


def build(model: Model):
    """The host's model for ``model`` with random weights (unit norms, fan-in-scaled matrices)
    generated on the load device, loaded through the host's state-dict loader steps."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    import torch

    bf16 = torch.bfloat16
    config = getattr(sm, model.supported)(dict(model.unet_config))
    device = mm.get_torch_device()
    config.set_inference_dtype(bf16, mm.unet_manual_cast(bf16, device, config.supported_inference_dtypes))
    with torch.device("meta"):
        shapes = {k: (t.shape, t.dtype) for k, t in config.get_model({}).diffusion_model.state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(0)
    sd = {}
    for name, (shape, dtype) in shapes.items():
        if not dtype.is_floating_point:
            continue
        if len(shape) == 1:
            value = (torch.ones(shape, device=device) if "norm" in name or name.endswith("scale")
                     else torch.randn(shape, device=device, generator=gen) * 0.02)
        else:
            value = torch.randn(shape, device=device, generator=gen) / math.sqrt(max(math.prod(shape[1:]), 1))
        sd[name] = value.to(bf16)
    net = config.get_model(sd, "", device=device)  # built in place: no host-memory copy of 28 GB
    net.load_model_weights(sd, "")
    del sd
    return comfy.model_patcher.ModelPatcher(net, load_device=device, offload_device=mm.unet_offload_device())


class AttentionTimer:
    """Outermost attention override: CUDA events around every call (ours, the host's or the
    chained one), summed after each step. Events only record: nothing synchronises mid-step."""

    def __init__(self, inner: Optional[Callable]):
        self.inner, self.events = inner, []

    def __call__(self, func, *args, **kwargs):
        import torch

        if not torch.cuda.is_available():
            return self.inner(func, *args, **kwargs) if self.inner else func(*args, **kwargs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.inner(func, *args, **kwargs) if self.inner else func(*args, **kwargs)
        end.record()
        self.events.append((start, end))
        return out

    def take_seconds(self) -> float:
        total = sum(s.elapsed_time(e) for s, e in self.events) / 1e3
        self.events.clear()
        return total


def patched(host_nodes, patcher, mode: str):
    """The model for a mode, with the timer as its outermost attention override."""
    from comfy_sage.comfy.override import OVERRIDE_KEY, find

    if mode == "fp32":
        model, inner = patcher.clone(), _fp32_attention
    elif mode == "sageattention":
        from comfy.ldm.modules.attention import attention_sage

        model = patcher.clone()
        inner = lambda func, *a, **kw: attention_sage(*a, **kw)  # noqa: E731 — ComfyUI's own sage path
    elif MODES[mode] is None:
        model, inner = patcher.clone(), None
    else:
        node = host_nodes.NODE_CLASS_MAPPINGS["SageAttention"]
        inputs = dict(NODE_DEFAULTS, **MODES[mode])
        model = node.execute(model=patcher, **inputs).result[0]
        inner = model.model_options["transformer_options"][OVERRIDE_KEY]
    timer = AttentionTimer(inner)
    model.model_options.setdefault("transformer_options", {})[OVERRIDE_KEY] = timer
    return model, timer, (find({OVERRIDE_KEY: inner}) if inner is not None and MODES[mode] else None)


def _fp32_attention(func, q, k, v, *args, **kwargs):
    """The host's attention on float32 copies of its inputs, the output back in q's dtype."""
    up = lambda t: t.float() if hasattr(t, "is_floating_point") and t.is_floating_point() else t  # noqa: E731
    args = tuple(up(a) for a in args)
    kwargs = {key: up(a) for key, a in kwargs.items()}
    return func(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)


def sample(model, spec: Model, steps: int, timer: AttentionTimer) -> dict:
    import comfy.sample
    import torch

    cuda = torch.cuda.is_available()
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(spec.context, generator=g), spec.extra(g)]]
    negative = [[torch.randn(spec.context, generator=g), spec.extra(g)]]
    noise = torch.randn(spec.latent, generator=g)
    marks, attention, latents = [], [], []

    def callback(step, x0, x, total):
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        attention.append(timer.take_seconds())
        latents.append(x.detach().float().cpu())

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    marks.append(time.perf_counter())
    timer.take_seconds()
    comfy.sample.sample(model, noise, steps, spec.cfg, "euler", "simple", positive, negative,
                        torch.zeros(spec.latent), denoise=1.0, disable_pbar=True, seed=0, callback=callback)
    step_s = [b - a for a, b in zip(marks, marks[1:])]
    timed = timed_steps(step_s)
    timed_attention = timed_steps(attention)
    median = statistics.median(timed)
    return {"step_s": step_s, "first_step_s": step_s[0], "median_step_s": median,
            "attention_share": statistics.median(a / s for a, s in zip(timed_attention, timed)),
            "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "_latents": latents}


def timed_steps(per_step: list) -> list:
    """A run's steps after the first (which holds compilation and cuDNN planning); all of a
    one-step run."""
    return per_step[1:] or per_step


def divergence(latents, baseline) -> list:
    out = []
    for a, b in zip(latents, baseline):
        a, b = a.flatten().double(), b.flatten().double()
        out.append({"cos": float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30)),
                    "rel_l1": float((a - b).abs().sum() / b.abs().sum().clamp_min(1e-30))})
    return out


def environment() -> dict:
    import torch

    from comfy_sage.bench import git_sha

    env = {"torch": torch.__version__, "python": platform.python_version(), "git_sha": git_sha(),
           "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    try:
        from comfyui_version import __version__ as comfy_version
    except ImportError:
        comfy_version = None
    env.update(comfyui=comfy_version, sageattention=public_sage_version())
    return env


def public_sage_version() -> str:
    """The public SageAttention's version, "unavailable: why" when it does not import. A source
    build (``setup.py build_ext --inplace`` on PYTHONPATH) has no package metadata: then
    $SAGEATTENTION_SOURCE says what was built (bench/public_sage_gpu.sh sets it)."""
    try:
        import sageattention  # noqa: F401
    except Exception as exc:  # any failure only means the mode is not measured; say why
        return f"unavailable: {exc}"
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sageattention")
    except PackageNotFoundError:
        return os.environ.get("SAGEATTENTION_SOURCE", "a source build without package metadata")


def main(argv=None) -> int:
    args = parse_args(argv)
    comfyui = Path(args.comfyui).resolve()
    os.environ["COMFYUI_PATH"] = str(comfyui)
    host_nodes = import_host(comfyui)
    import torch

    table = TINY if args.tiny else dict(MODELS, **SMALL)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES] + [m for m in args.models.split(",") if m not in table]
    if unknown:
        raise SystemExit(f"unknown model or mode {unknown}: models {list(table)}, modes {list(MODES)}")
    if "host" in modes:
        modes = ["host"] + [m for m in modes if m != "host"]
    env = environment()
    if "sageattention" in modes and str(env["sageattention"]).startswith("unavailable"):
        print(f"e2e: skipping mode sageattention ({env['sageattention']})")
        modes.remove("sageattention")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "environment": env,
              "steps": args.steps, "rounds": args.rounds, "models": {}}
    failed = False
    for name in args.models.split(","):
        spec = table[name]()
        patcher = build(spec)
        runs, baseline = {}, None
        for rnd in range(args.rounds):
            for mode in modes:
                model, timer, override = patched(host_nodes, patcher, mode)
                run = sample(model, spec, args.steps, timer)
                latents = run.pop("_latents")
                del model
                if rnd:  # later rounds add timed steps; the first holds divergence and first-step time
                    first = runs[mode]
                    first.setdefault("step_s_rounds", [first["step_s"]]).append(run["step_s"])
                    pooled = [t for steps in first["step_s_rounds"] for t in timed_steps(steps)]
                    first["median_step_s"] = statistics.median(pooled)
                    if mode != "host":
                        first["speedup_vs_host"] = runs["host"]["median_step_s"] / first["median_step_s"]
                    continue
                run["finite"] = bool(all(torch.isfinite(x).all() for x in latents))
                failed |= not run["finite"]
                if mode == "host":
                    baseline = latents
                elif baseline is not None:
                    run["divergence_per_step"] = divergence(latents, baseline)
                    run["speedup_vs_host"] = runs["host"]["median_step_s"] / run["median_step_s"]
                if override is not None:
                    total = override.stats.snapshot()["total"]
                    run["calls"] = {k: total[k] for k in ("calls", "ours", "fallback", "backends") if k in total}
                runs[mode] = run
        for mode, run in runs.items():
            print(f"{name:14s} {mode:14s} step {run['median_step_s'] * 1e3:9.1f} ms  first "
                  f"{run['first_step_s'] * 1e3:9.1f} ms  attention {run['attention_share']:.0%}"
                  + (f"  speed-up {run['speedup_vs_host']:.3f}x  final rel-L1 "
                     f"{run['divergence_per_step'][-1]['rel_l1']:.4f}" if "speedup_vs_host" in run else ""),
                  flush=True)
        result["models"][name] = {"unet_config": {k: v for k, v in spec.unet_config.items()},
                                  "latent": list(spec.latent), "cfg": spec.cfg, "runs": runs}
        del patcher
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        # after every model: a run cut short by a time limit keeps the models it finished
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
