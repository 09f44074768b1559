"""Speed and accuracy of every variant on model-shaped attention problems.

Timing follows the usual rules: warm-up first, CUDA events around each call, the median
of many calls, input sets rotated so the L2 cache does not flatter small shapes. Accuracy
is measured against float32 attention on the same inputs. The reference backend is an
emulation: it is measured for accuracy only, never timed on the GPU; it and SDPA's math
kernel, which both materialize scores, are skipped on large shapes (``slow_max_tokens``).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Iterable, Optional

import torch

from .accuracy import InputKind, errors, float32_attention, make_inputs
from .backends import available_backends
from .variants import variants


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    tokens: int
    head_dim: int
    causal: bool = False
    kv_tokens: Optional[int] = None  # cross-attention (text, image tokens); None: self-attention

    @property
    def flops(self) -> float:
        """4·B·H·Nq·Nkv·D for Q·Kᵀ and P·V; half of it is masked away when causal."""
        kv = self.tokens if self.kv_tokens is None else self.kv_tokens
        full = 4.0 * self.batch * self.heads * self.tokens * kv * self.head_dim
        return full / 2 if self.causal else full

    def label(self) -> str:
        text = f"{self.batch}x{self.heads}x{self.tokens}x{self.head_dim}"
        if self.kv_tokens is not None and self.kv_tokens != self.tokens:
            text += f" kv{self.kv_tokens}"
        return text + (" causal" if self.causal else "")


# Self-attention of the models users run, sorted by work. Token counts are latent tokens
# (patchified): Wan 2.1 480p x 81 frames = 21 x 30 x 52, 720p = 21 x 45 x 80; HunyuanVideo
# 720p x 129 frames = 33 x 45 x 80; Flux 1024² = 4096 image + 512 text tokens; SDXL 1024²'s
# largest self-attention = 64 x 64 with classifier-free guidance's batch of 2.
MODEL_SHAPES = tuple(sorted((
    Shape("sdxl-1024", 2, 10, 4096, 64),
    Shape("flux-1024", 1, 24, 4608, 128),
    Shape("wan1.3b-480p", 1, 12, 32760, 128),
    Shape("wan14b-480p", 1, 40, 32760, 128),
    Shape("wan1.3b-720p", 1, 12, 75600, 128),
    Shape("wan14b-720p", 1, 40, 75600, 128),
    Shape("hunyuan-720p-129f", 1, 24, 118800, 128),
), key=lambda s: s.flops))

# Small shapes for the CPU accuracy table (the reference backend is slow by design).
CPU_SHAPES = (
    Shape("small-64", 1, 2, 512, 64),
    Shape("small-128", 1, 2, 1024, 128),
    Shape("small-causal", 1, 2, 512, 128, causal=True),
)


def parse_shape(text: str) -> Shape:
    """'B,H,N,D[,causal]' -> Shape."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5) or not all(p.isdigit() and int(p) > 0 for p in parts[:4]):
        raise ValueError(f"--shape: expected B,H,N,D[,causal] with positive integers, got {text!r}")
    causal = False
    if len(parts) == 5:
        if parts[4].lower() not in ("causal", "1", "true", "0", "false"):
            raise ValueError(f"--shape: the fifth field must be 'causal', got {parts[4]!r}")
        causal = parts[4].lower() in ("causal", "1", "true")
    b, h, n, d = (int(p) for p in parts[:4])
    return Shape(f"custom-{b}x{h}x{n}x{d}" + ("-causal" if causal else ""), b, h, n, d, causal)


class Progress:
    """A one-line progress bar on stderr (no dependency; silent when not a terminal)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label[:48]:<48}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def time_cuda(fn: Callable, input_sets: list, warmup_ms: float = 100.0, rep_ms: float = 500.0) -> float:
    """Median milliseconds of fn(*inputs) over rotated input sets, timed with CUDA events."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    i = 0
    while (time.perf_counter() - start) * 1000 < warmup_ms or i < 2:
        fn(*input_sets[i % len(input_sets)])
        i += 1
        torch.cuda.synchronize()
    per_call = max((time.perf_counter() - start) * 1000 / i, 1e-3)
    reps = int(min(max(rep_ms / per_call, 5), 1000))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for r, (e0, e1) in enumerate(events):
        args = input_sets[r % len(input_sets)]
        e0.record()
        fn(*args)
        e1.record()
    torch.cuda.synchronize()
    times = sorted(e0.elapsed_time(e1) for e0, e1 in events)
    return times[len(times) // 2]


def time_cpu(fn: Callable, input_sets: list, warmup_ms: float = 100.0, rep_ms: float = 500.0) -> float:
    """Median milliseconds of fn(*inputs) on the CPU (wall clock; for the Sage Benchmark node on
    hosts without a GPU, whose attention runs on the CPU)."""
    start = time.perf_counter()
    i = 0
    while (time.perf_counter() - start) * 1000 < warmup_ms or i < 1:
        fn(*input_sets[i % len(input_sets)])
        i += 1
    per_call = max((time.perf_counter() - start) * 1000 / i, 1e-3)
    times = []
    for r in range(int(min(max(rep_ms / per_call, 3), 1000))):
        t0 = time.perf_counter()
        fn(*input_sets[r % len(input_sets)])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


def _rotation(bytes_per_set: int, device: torch.device) -> int:
    """How many input sets make the working set several times the L2 cache."""
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    return int(min(8, max(1, math.ceil(4 * l2 / max(bytes_per_set, 1)))))


def run(
    shapes: Iterable[Shape],
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
    kind: InputKind = InputKind.GAUSSIAN,
    select: Optional[Callable[[str], bool]] = None,
    slow_max_tokens: int = 8192,
    warmup_ms: float = 100.0,
    rep_ms: float = 500.0,
    progress: bool = True,
    cpu_timing: bool = False,
) -> list[dict]:
    """One row per (shape, variant): ms and TFLOPS (CUDA; on the CPU with ``cpu_timing``, where
    the reference backend is timed too: it is what runs there), speed-up vs cuDNN, errors."""
    shapes = list(shapes)
    table = {name: fn for name, fn in variants(device).items() if select is None or select(name)}
    cuda = device.type == "cuda"
    timing = cuda or cpu_timing
    timer = time_cuda if cuda else time_cpu
    bar = Progress(len(shapes) * len(table)) if progress else None
    rows = []
    for shape in shapes:
        q, k, v = make_inputs(kind, shape.batch, shape.heads, shape.tokens, shape.head_dim,
                              kv_tokens=shape.kv_tokens, dtype=dtype, device=device, seed=len(rows))
        ref = float32_attention(q, k, v, is_causal=shape.causal)
        sets = [(q, k, v)]
        if cuda:
            per_set = 3 * q.numel() * q.element_size()
            sets += [tuple(x.clone() for x in (q, k, v)) for _ in range(_rotation(per_set, device) - 1)]
        shape_rows = []
        for name, fn in table.items():
            row = {"shape": shape.name, "dims": shape.label(), "variant": name, "input": kind.value,
                   "dtype": str(dtype).replace("torch.", ""), "ms": None, "tflops": None}
            is_reference = name.startswith("reference.")
            materializes = is_reference or name == "sdpa.math"  # both hold whole score blocks in memory
            if materializes and max(shape.tokens, shape.kv_tokens or 0) > slow_max_tokens:
                row["skipped"] = f"skipped above {slow_max_tokens} tokens (materializes the scores)"
            else:
                def call(a, b, c, fn=fn):
                    return fn(a, b, c, tensor_layout="HND", is_causal=shape.causal)
                try:
                    out = call(q, k, v)
                    row.update(errors(out, ref).as_dict())
                    del out
                    if timing and not (is_reference and cuda):
                        row["ms"] = timer(call, sets, warmup_ms, rep_ms)
                        row["tflops"] = shape.flops / (row["ms"] * 1e-3) / 1e12
                except (RuntimeError, ValueError) as e:  # one failing variant must not end the run
                    row["error"] = f"{type(e).__name__}: {e}"
            shape_rows.append(row)
            if bar:
                bar.step(f"{shape.name} {name}")
        baseline = next((r["ms"] for r in shape_rows if r["variant"] == "sdpa.cudnn" and r["ms"]), None)
        baseline = baseline or next((r["ms"] for r in shape_rows if r["variant"] == "sdpa.default" and r["ms"]), None)
        for r in shape_rows:
            r["speedup_vs_cudnn"] = baseline / r["ms"] if baseline and r["ms"] else None
        rows += shape_rows
        del q, k, v, ref, sets
        if cuda:
            torch.cuda.empty_cache()
    return rows


def node_variant(name: str) -> bool:
    """Whether ``<backend>.<variant>`` is something the Sage Attention node can run: every SDPA
    kernel (the baseline) and the quantized variants the node offers."""
    from .comfy.options import NODE_VARIANTS

    backend, _, variant = name.partition(".")
    return backend == "sdpa" or variant in NODE_VARIANTS


def environment(device: torch.device) -> dict:
    """What a result needs to be reproduced: GPU, versions, git SHA, command, date."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "comfy_sage"] + sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "backends": available_backends(),
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=list(torch.cuda.get_device_capability(device)),
                   sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                   driver=_driver_version())
    else:
        env["gpu"] = None
    return env


def git_sha() -> Optional[str]:
    """The commit this tree is at, or None (COMFY_SAGE_GIT_SHA overrides: the device copy has no git)."""
    if os.environ.get("COMFY_SAGE_GIT_SHA"):
        return os.environ["COMFY_SAGE_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    return sha if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) else None


def _driver_version() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def format_table(rows: list[dict]) -> str:
    header = f"{'shape':<20} {'variant':<31} {'ms':>9} {'TFLOPS':>8} {'vs cuDNN':>8} {'cos':>9} {'rel-L1':>8}"
    lines = [header, "-" * len(header)]

    def num(value, fmt):
        width = int(fmt.split(".")[0])
        return format(value, fmt) if isinstance(value, (int, float)) else "-".rjust(width)

    for r in rows:
        note = r.get("error") or r.get("skipped") or ""
        lines.append(
            f"{r['shape']:<20} {r['variant']:<31} {num(r['ms'], '9.3f')} {num(r['tflops'], '8.1f')} "
            f"{num(r.get('speedup_vs_cudnn'), '7.2f')}{'x' if r.get('speedup_vs_cudnn') else ' '} "
            f"{num(r.get('cos'), '9.5f')} {num(r.get('rel_l1'), '8.4f')}" + (f"  {note}" if note else "")
        )
    return "\n".join(lines)
