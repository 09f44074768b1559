"""The Sage Attention node on a full-size random-weight Wan 2.1 1.3B inside a real ComfyUI.

Builds the model from ComfyUI's own class with random weights, saves it as safetensors, loads
it through ComfyUI's loader, applies the node (loaded through ComfyUI's custom-node loader),
samples a couple of steps of a 480p×33-frame latent, and prints the override's statistics.
Exit status 1 unless every self-attention call ran on the requested backend.

  GPU:  python bench/wan_node_gpu.py --comfyui /path/to/ComfyUI --out bench/results/wan_node_h200.json
  CPU dry run (tiny model, reference backend):
        python bench/wan_node_gpu.py --comfyui /path/to/ComfyUI --tiny --backend reference --out /tmp/wan.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Wan 2.1 T2V 1.3B (the released config) and a tiny one for CPU dry runs.
FULL = dict(dim=1536, ffn_dim=8960, num_layers=30, latent=(1, 16, 9, 60, 104))  # 480×832, 33 frames
TINY = dict(dim=256, ffn_dim=256, num_layers=2, latent=(1, 16, 2, 8, 8))
TEXT_TOKENS, TEXT_DIM = 512, 4096


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", required=True, help="path to a ComfyUI checkout")
    p.add_argument("--out", required=True, help="JSON file to write the results to")
    p.add_argument("--backend", default="cuda", choices=["auto", "cuda", "triton", "reference"],
                   help="the node's backend input (default cuda)")
    p.add_argument("--variant", default="auto", help="the node's variant input")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--tiny", action="store_true", help="tiny model and latent (CPU dry run)")
    p.add_argument("--frames", type=int, default=33,
                   help="video frames of the full-size latent (4k+1; 81 gives 32760 tokens, Wan's default length)")
    p.add_argument("--warmup", action="store_true",
                   help="sample one step of each model first, so compilation (Triton JIT, cuDNN plans) stays out "
                        "of the timed runs")
    p.add_argument("--no-baseline", action="store_true", help="skip the unpatched run")
    p.add_argument("--timing", action="store_true",
                   help="time each attention call (synchronizes the GPU around every call)")
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
        # the host keeps CPU models in float32, where the node (by design) keeps the host attention
        mm.should_use_bf16 = lambda *a, **kw: True
    import nodes as host_nodes

    if not asyncio.run(host_nodes.load_custom_node(str(REPO), module_parent="custom_nodes")):
        raise SystemExit("ComfyUI's loader rejected this repository")
    return host_nodes


def random_wan(size: dict, folder: Path) -> Path:
    """Random weights for the host's WanModel (unit norms, fan-in-scaled matrices), as safetensors."""
    import comfy.supported_models as sm
    import torch
    from safetensors.torch import save_file

    config = sm.WAN21_T2V(dict(image_model="wan2.1", model_type="t2v", dim=size["dim"], ffn_dim=size["ffn_dim"],
                               num_layers=size["num_layers"], num_heads=size["dim"] // 128, in_dim=16, out_dim=16,
                               text_dim=TEXT_DIM, freq_dim=256))
    config.set_inference_dtype(torch.bfloat16, None)
    with torch.device("meta"):
        model = config.get_model({}).diffusion_model
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, t in model.state_dict().items():
        if t.ndim == 1 and "norm" in name:
            value = torch.ones(t.shape, dtype=torch.bfloat16)
        elif t.ndim == 1:
            value = (torch.randn(t.shape, generator=gen) * 0.02).to(torch.bfloat16)
        else:
            value = (torch.randn(t.shape, generator=gen) / math.sqrt(max(math.prod(t.shape[1:]), 1))).to(torch.bfloat16)
        sd[name] = value
    path = folder / "wan21_t2v_random.safetensors"
    save_file(sd, str(path))
    return path


def sample(patcher, latent_shape, steps, cfg):
    import comfy.model_management as mm
    import comfy.sample
    import torch

    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=g), {}]]
    negative = [[torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=g), {}]]
    noise = torch.randn(latent_shape, generator=g)
    device = mm.get_torch_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", positive, negative,
                              torch.zeros(latent_shape), denoise=1.0, disable_pbar=True, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    from comfy_sage.bench import git_sha

    env["git_sha"] = git_sha()
    try:
        sys.path.insert(0, str(Path(os.environ.get("COMFYUI_PATH", ""))))
        from comfyui_version import __version__ as comfy_version

        env["comfyui"] = comfy_version
    except ImportError:
        env["comfyui"] = None
    return env


def main(argv=None) -> int:
    args = parse_args(argv)
    comfyui = Path(args.comfyui).resolve()
    os.environ["COMFYUI_PATH"] = str(comfyui)
    host_nodes = import_host(comfyui)
    import comfy.sd
    import torch

    from comfy_sage.comfy import find

    size = TINY if args.tiny else dict(FULL, latent=(1, 16, (args.frames - 1) // 4 + 1, 60, 104))
    with tempfile.TemporaryDirectory() as tmp:
        path = random_wan(size, Path(tmp))
        patcher = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.bfloat16})
    node = host_nodes.NODE_CLASS_MAPPINGS["SageAttention"]
    inputs = dict(backend=args.backend, variant=args.variant, qk_granularity="auto", smooth_k=True, smooth_q=False,
                  start_percent=0.0, end_percent=1.0, full_precision_first_blocks=0, full_precision_last_blocks=0,
                  allow_compile=True, nan_guard=False)
    check = node.validate_inputs(**inputs)
    if check is not True:
        raise SystemExit(f"node inputs rejected: {check}")
    patched = node.execute(model=patcher, **inputs).result[0]
    override = find(patched.model_options["transformer_options"])
    if args.timing:
        override.config = dataclasses.replace(override.config, timing=True)

    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "environment": environment(),
              "model": {"family": "wan2.1-t2v", **{k: v for k, v in size.items() if k != "latent"},
                        "latent": list(size["latent"]), "text_tokens": TEXT_TOKENS},
              "steps": args.steps, "cfg": args.cfg, "node_inputs": inputs}
    if args.warmup:
        for model in ([patched] if args.no_baseline else [patcher, patched]):
            sample(model, size["latent"], 1, args.cfg)
    if not args.no_baseline:
        base, base_s = sample(patcher, size["latent"], args.steps, args.cfg)
        result["baseline_s"] = base_s
    out, patched_s = sample(patched, size["latent"], args.steps, args.cfg)
    result["patched_s"] = patched_s
    if not args.no_baseline:
        a, b = out.float(), base.float()
        result["latent_rel_l1_vs_baseline"] = ((a - b).abs().sum() / b.abs().sum()).item()
    stats = override.stats.snapshot()["total"]
    result["stats"] = stats

    expected_backend = {"auto": None, "reference": "reference", "cuda": "cuda", "triton": "triton"}[args.backend]
    self_attn = [s for s in stats["by_shape"] if s["q_tokens"] == s["kv_tokens"]]
    bad = [s for s in self_attn if set(s) - {"batch", "heads", "q_tokens", "kv_tokens", "head_dim", "dtype", "ours"}]
    ok = bool(self_attn) and not bad and (expected_backend is None or set(stats["backends"]) <= {expected_backend})
    result["every_self_attention_call_ours"] = ok
    result["finite"] = bool(torch.isfinite(out).all())

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"calls {stats['calls']}  ours {stats['ours']}  backends {stats['backends']}  fallback {stats['fallback']}")
    for s in stats["by_shape"]:
        kind = "self " if s["q_tokens"] == s["kv_tokens"] else "cross"
        counts = {k: v for k, v in s.items() if k not in ("batch", "heads", "q_tokens", "kv_tokens", "head_dim", "dtype")}
        print(f"  {kind} B={s['batch']} H={s['heads']} Lq={s['q_tokens']} Lk={s['kv_tokens']} D={s['head_dim']} "
              f"{s['dtype']}: {counts}")
    if "baseline_s" in result:
        print(f"baseline {result['baseline_s']:.2f} s  patched {patched_s:.2f} s  "
              f"latent rel-L1 {result['latent_rel_l1_vs_baseline']:.4f}")
    print("every self-attention call ran ours:", ok)
    return 0 if ok and result["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
