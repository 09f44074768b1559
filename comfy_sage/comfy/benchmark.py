"""What the Sage Benchmark node computes, without ComfyUI: the attention shapes a model calls
with, every backend and variant timed on exactly those shapes (with :mod:`comfy_sage.bench`,
the harness behind ``python -m comfy_sage bench``), the recommendation, and the bar chart.

Shapes come from one sampling step (:class:`ShapeRecorder`, installed as the host's attention
override) or from the statistics a Sage Attention node's override kept of a previous run
(:func:`shapes_from_stats`). Each shape carries how many calls of the step or run used it, so
a variant's total is the attention time that step or run would take with it.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable, Optional, Sequence

import torch

from .. import bench
from ..config import DEFAULT_VARIANT
from .override import _shape_key

# The accuracy gate of a recommendation: rel-L1 against float32 on Gaussian inputs.
# SageAttention2's INT8-Q·K / FP8-P·V scheme measures 0.037-0.039 there (DESIGN.md, the H200
# table; the reference emulation gives the same), INT8-P·V and FP16-P·V less; 0.05 admits
# those and rejects a variant that is visibly worse (INT4 Q·K, or a broken kernel).
ACCURACY_GATE = 0.05
QUANTIZED = ("cuda", "triton", "reference")
KERNELS = ("cuda", "triton")  # the quantized backends a recommendation may name


@dataclasses.dataclass(frozen=True)
class CallShape:
    batch: int
    heads: int
    q_tokens: int
    kv_tokens: int
    head_dim: int
    dtype: str

    def label(self) -> str:
        text = f"{self.batch}x{self.heads}x{self.q_tokens}x{self.head_dim}"
        return text + (f" kv{self.kv_tokens}" if self.kv_tokens != self.q_tokens else "")

    def bench_shape(self) -> bench.Shape:
        return bench.Shape(self.label(), self.batch, self.heads, self.q_tokens, self.head_dim,
                           kv_tokens=self.kv_tokens)

    @property
    def flops(self) -> float:
        return 4.0 * self.batch * self.heads * self.q_tokens * self.kv_tokens * self.head_dim


class ShapeRecorder:
    """Attention override that records the shape of every call and runs ``inner`` (another
    override) or the host's function. Masked calls are counted apart: no quantized kernel takes
    them (the Sage override keeps the host's attention there), so they are not benchmarked."""

    def __init__(self, inner: Optional[Callable] = None):
        self.inner = inner
        self.counts: collections.Counter = collections.Counter()
        self.masked = 0

    def __deepcopy__(self, memo):  # the host deep-copies model options: keep one record
        return self

    def __copy__(self):
        return self

    def __call__(self, func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        if not torch.compiler.is_compiling():
            shape = call_shape(q, k, heads, skip_reshape)
            if mask is not None:
                self.masked += 1
            elif shape is not None:
                self.counts[shape] += 1
        args = (q, k, v, heads)
        kw = dict(mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                  skip_output_reshape=skip_output_reshape, **kwargs)
        return self.inner(func, *args, **kw) if self.inner is not None else func(*args, **kw)


def call_shape(q, k, heads, skip_reshape: bool) -> Optional[CallShape]:
    """The host's call layout, (B, L, H·D) or with ``skip_reshape`` (B, H, L, D), as a shape: the
    key the override's statistics use, so both sources of shapes agree."""
    key = _shape_key(q, k, heads, skip_reshape)
    return None if key[0] == 0 else CallShape(*key)


def shapes_from_stats(snapshot_run: Optional[dict]) -> collections.Counter:
    """Shapes and call counts from one run of the override's statistics (``Stats.snapshot()``'s
    ``run`` or ``last_run``): every call, whichever attention ran it."""
    counts: collections.Counter = collections.Counter()
    for entry in (snapshot_run or {}).get("by_shape", ()):
        n = sum(v for key, v in entry.items() if key not in ("batch", "heads", "q_tokens", "kv_tokens", "head_dim",
                                                                 "dtype") and isinstance(v, int))
        shape = CallShape(entry["batch"], entry["heads"], entry["q_tokens"], entry["kv_tokens"], entry["head_dim"],
                          entry["dtype"])
        if n > 0 and shape.batch > 0:
            counts[shape] += n
    return counts


def top_shapes(counts: collections.Counter, limit: int) -> list[tuple[CallShape, int]]:
    """The ``limit`` shapes with the most attention work (calls × FLOPs), largest first."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[0].flops * kv[1], kv[0].label()))
    return ranked[:max(0, limit)]


# -- the comparison -------------------------------------------------------------------------
def totals(rows: Sequence[dict], weights: dict[str, int]) -> list[dict]:
    """Per variant: Σ calls × ms over the benchmarked shapes, and its worst rel-L1. A variant
    missing a time on any shape (error, skipped, untimed) gets ``total_ms`` None and the reason."""
    by_variant: dict[str, dict] = {}
    for r in rows:
        entry = by_variant.setdefault(r["variant"], {"variant": r["variant"], "total_ms": 0.0, "worst_rel_l1": None,
                                                     "note": None})
        rel = r.get("rel_l1")
        if rel is not None and not math.isnan(rel):
            entry["worst_rel_l1"] = rel if entry["worst_rel_l1"] is None else max(entry["worst_rel_l1"], rel)
        elif "error" not in r and "skipped" not in r:
            entry["worst_rel_l1"] = float("nan")
        if r.get("ms") is None:
            entry["total_ms"] = None
            entry["note"] = entry["note"] or r.get("error") or r.get("skipped") or "not timed"
        elif entry["total_ms"] is not None:
            entry["total_ms"] += weights.get(r["shape"], 1) * r["ms"]
    for entry in by_variant.values():
        entry["backend"], _, entry["kernel"] = entry["variant"].partition(".")
        entry["quantized"] = entry["backend"] in QUANTIZED
        rel = entry["worst_rel_l1"]
        entry["passes_gate"] = (not entry["quantized"]) or (rel is not None and rel <= ACCURACY_GATE)
    return sorted(by_variant.values(), key=lambda e: (e["total_ms"] is None, e["total_ms"] or 0.0, e["variant"]))


def recommend(entries: Sequence[dict], device: str) -> dict:
    """The setting for the Sage Attention node: the fastest quantized variant that passes the
    accuracy gate when it beats the fastest PyTorch (SDPA) kernel, else ComfyUI's attention."""
    timed = [e for e in entries if e["total_ms"] is not None]
    sdpa = min((e for e in timed if e["backend"] == "sdpa"), key=lambda e: e["total_ms"], default=None)
    # The reference backend emulates the kernels' numerics to check quality; however its time
    # compares, it is never a speed setting.
    quant = min((e for e in timed if e["backend"] in KERNELS and e["passes_gate"]), key=lambda e: e["total_ms"],
                default=None)
    cpu_note = "" if device.startswith("cuda") else (
        " These are CPU timings: on a CPU the node runs the reference emulation, made to check accuracy, not "
        "speed; run this node on an NVIDIA GPU for the setting to use there.")
    if quant is None:
        return {"backend": "off", "variant": "auto", "speedup": None,
                "text": "Keep ComfyUI's attention: no quantized kernel (cuda, triton) was timed within the accuracy "
                        f"gate (rel-L1 <= {ACCURACY_GATE}) on this machine." + cpu_note}
    speed = sdpa["total_ms"] / quant["total_ms"] if sdpa and quant["total_ms"] > 0 else None
    if sdpa is not None and quant["total_ms"] >= sdpa["total_ms"]:
        return {"backend": "off", "variant": "auto", "speedup": speed,
                "text": f"Keep ComfyUI's attention (Sage Attention backend off, or auto, which keeps it where no "
                        f"kernel was measured faster): PyTorch's {sdpa['kernel']} kernel takes "
                        f"{sdpa['total_ms']:.3g} ms on these shapes, the fastest quantized variant "
                        f"({quant['variant']}) {quant['total_ms']:.3g} ms." + cpu_note}
    text = (f"Sage Attention with backend {quant['backend']}, variant {quant['kernel']}: "
            f"{quant['total_ms']:.3g} ms of attention on these shapes"
            + (f", {speed:.2f}x PyTorch's fastest kernel ({sdpa['kernel']}, {sdpa['total_ms']:.3g} ms)"
               if speed else "") + f"; rel-L1 {quant['worst_rel_l1']:.3f} vs float32." + cpu_note)
    return {"backend": quant["backend"], "variant": quant["kernel"], "speedup": speed, "text": text}


def format_table(shapes: Sequence[tuple[CallShape, int]], rows: Sequence[dict], entries: Sequence[dict],
                 recommendation: dict, device: str, source: str) -> str:
    lines = [f"Sage benchmark on {device} ({source}); timings are "
             + ("GPU (CUDA events)" if device.startswith("cuda") else "CPU wall-clock") + ":"]
    lines.append("shapes (B x H x N x D, calls):")
    lines += [f"  {s.label():<28} {s.dtype:<9} x{n}" for s, n in shapes]
    lines.append("")
    lines.append(bench.format_table(list(rows)))
    lines.append("")
    header = f"{'variant':<32} {'total ms':>10} {'worst rel-L1':>13}"
    lines += [header, "-" * len(header)]
    for e in entries:
        total = "-" if e["total_ms"] is None else f"{e['total_ms']:.3f}"
        rel = "-" if e["worst_rel_l1"] is None else f"{e['worst_rel_l1']:.4f}"
        flag = "" if e["passes_gate"] else f"  above the accuracy gate {ACCURACY_GATE}"
        lines.append(f"{e['variant']:<32} {total:>10} {rel:>13}{flag}" + (f"  {e['note']}" if e["note"] else ""))
    lines.append("")
    lines.append("recommended: " + recommendation["text"])
    return "\n".join(lines)


# -- the chart ------------------------------------------------------------------------------
CHART_WIDTH = 760
LABEL_WIDTH = 250
VALUE_WIDTH = 170
ROW_HEIGHT = 26
TOP = 40
COLORS = {"sdpa": (140, 140, 150), "quantized": (60, 170, 90), "gated": (230, 140, 40), "background": (30, 30, 34),
          "text": (235, 235, 235)}


def bar_lengths(values: Sequence[Optional[float]], width: int) -> list[int]:
    """Pixel lengths proportional to the values, the largest filling ``width`` (None → 0)."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    top = max(finite, default=0.0)
    return [0 if v is None or not math.isfinite(v) or v <= 0 or top == 0 else max(1, round(width * v / top))
            for v in values]


def bar_color(entry: dict) -> tuple[int, int, int]:
    if not entry["quantized"]:
        return COLORS["sdpa"]
    return COLORS["quantized"] if entry["passes_gate"] else COLORS["gated"]


def chart(entries: Sequence[dict], title: str) -> torch.Tensor:
    """A horizontal bar chart of each variant's total attention time, as a ComfyUI IMAGE
    ``(1, H, W, 3)`` in [0, 1]. Grey: PyTorch; green: quantized within the accuracy gate;
    orange: quantized above it."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)  # Pillow >= 10.1 with FreeType: a readable size
    except (TypeError, OSError):
        font = ImageFont.load_default()
    shown = [e for e in entries if e["total_ms"] is not None]
    height = TOP + ROW_HEIGHT * max(1, len(shown)) + 10
    img = Image.new("RGB", (CHART_WIDTH, height), COLORS["background"])
    draw = ImageDraw.Draw(img)
    draw.text((10, 12), title, fill=COLORS["text"], font=font)
    bar_width = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    for i, (entry, length) in enumerate(zip(shown, bar_lengths([e["total_ms"] for e in shown], bar_width))):
        y = TOP + i * ROW_HEIGHT
        draw.text((10, y + 5), entry["variant"][:30], fill=COLORS["text"], font=font)
        draw.rectangle([LABEL_WIDTH, y + 4, LABEL_WIDTH + length - 1, y + ROW_HEIGHT - 5], fill=bar_color(entry))
        rel = entry["worst_rel_l1"]
        label = f"{entry['total_ms']:.3g} ms" + ("" if rel is None else f"  rel-L1 {rel:.3f}")
        draw.text((LABEL_WIDTH + length + 6, y + 5), label, fill=COLORS["text"], font=font)
    if not shown:
        draw.text((10, TOP + 6), "no variant could be timed on this machine", fill=COLORS["text"], font=font)
    return pil_to_image(img)


def pil_to_image(img) -> torch.Tensor:
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return (data.reshape(img.height, img.width, 3).float() / 255.0).unsqueeze(0)


# -- what the Sage Attention node will run on this machine ----------------------------------
def machine_summary(device: Optional[torch.device] = None) -> dict:
    """For the web extension: what each backend choice of the Sage Attention node runs here."""
    from .. import backends, dispatch

    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    out = {"device": str(device), "backends": {}}
    for name in ("cuda", "triton", "reference"):
        why = backends.why_not(name)
        impl = backends.get(name) if why is None else None
        names = list(impl.variants(device)) if impl is not None else []
        default = DEFAULT_VARIANT if DEFAULT_VARIANT in names else (names[0] if names else None)
        out["backends"][name] = {"available": why is None and bool(names), "why_not": why, "variants": names,
                                 "default_variant": default}
    if device.type == "cuda":
        cap = tuple(torch.cuda.get_device_capability(device))
        rules = [r for r in dispatch.RULES if r.capability == cap]
        if rules:
            out["auto"] = "; ".join(f"{r.backend} {r.variant} for head dim {'/'.join(map(str, r.head_dims))} from "
                                    f"{r.min_q_tokens} tokens" for r in rules) + "; ComfyUI's attention elsewhere"
        else:
            out["auto"] = (f"ComfyUI's attention: no quantized kernel was measured faster on sm_{cap[0]}{cap[1]} "
                           "(choose backend cuda or triton to force one)")
    else:
        out["auto"] = ("ComfyUI's attention: on the CPU auto never quantizes (the kernels need an NVIDIA GPU); "
                       "backend reference emulates the quantization there, slowly, to check quality")
    return out

