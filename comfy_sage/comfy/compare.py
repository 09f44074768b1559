"""What the Sage Compare Sampler measures and reports, without ComfyUI.

The node samples the same latent with the host's attention (the baseline) and with one or
more Sage settings; everything it then computes lives here so that it is tested on plain
tensors: per-frame latent differences (cos, rel-L1, PSNR), decoded-frame PSNR and SSIM,
difference heatmaps, speed-ups, peak-memory bookkeeping, and the report (structured for the
web extension, and as text).

Conventions:

* A *frame* of a latent is one ``(C, H, W)`` slice: image latents ``(B, C, H, W)`` have B
  frames, video latents ``(B, C, T, H, W)`` have B·T frames (batch-major).
* Latent PSNR uses the baseline latent's peak-to-peak value (max - min over the whole
  latent) as its range: latents are not bounded like pixels, and one range for every frame
  keeps frames comparable. Decoded frames are pixels in [0, 1], range 1.
* SSIM is Wang et al. (2004): an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03,
  valid positions only, averaged over positions and channels; images smaller than the
  window use the largest odd window that fits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..accuracy import errors

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# Heatmaps are upscaled (nearest) until their longer side reaches this, so an 8×8 latent
# frame is still readable in a preview node.
HEATMAP_MIN_SIDE = 256


# -- per-frame metrics ----------------------------------------------------------------------
def latent_frames(latent: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, C, H, W)``; ``(B, C, T, H, W)`` → ``(B·T, C, H, W)``."""
    if latent.ndim == 4:
        return latent
    if latent.ndim == 5:
        b, c, t, h, w = latent.shape
        return latent.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    raise ValueError(f"latent: expected 4 (B,C,H,W) or 5 (B,C,T,H,W) dimensions, got shape {tuple(latent.shape)}")


def psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float) -> float:
    """10·log10(range² / MSE) in float64; ``inf`` when identical, NaN when out is not finite."""
    if out.shape != ref.shape:
        raise ValueError(f"out, ref: shapes differ: {tuple(out.shape)} and {tuple(ref.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range}")
    o, r = out.detach().double(), ref.detach().double()
    if not torch.isfinite(o).all():
        return float("nan")
    mse = ((o - r) ** 2).mean().item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(out: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> list[float]:
    """SSIM of each image of two ``(N, H, W, C)`` batches (ComfyUI's IMAGE layout)."""
    if out.shape != ref.shape or out.ndim != 4:
        raise ValueError(f"out, ref: expected two (N, H, W, C) images of one shape, got {tuple(out.shape)} and "
                         f"{tuple(ref.shape)}")
    n, h, w, c = out.shape
    size = min(SSIM_WINDOW, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    window = _gaussian_window(size, SSIM_SIGMA).expand(c, 1, size, size)
    x = out.detach().double().permute(0, 3, 1, 2)
    y = ref.detach().double().permute(0, 3, 1, 2)

    def blur(t):
        return F.conv2d(t, window, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return [float(v) for v in s.mean(dim=(1, 2, 3))]


def latent_metrics(sage: torch.Tensor, base: torch.Tensor) -> dict:
    """Per-frame cos / rel-L1 / PSNR of a Sage latent against the baseline, and their means."""
    if sage.shape != base.shape:
        raise ValueError(f"latents: shapes differ: sage {tuple(sage.shape)}, baseline {tuple(base.shape)}")
    data_range = float(base.max() - base.min()) if base.numel() else 0.0
    data_range = data_range if data_range > 0 else 1.0  # a constant baseline: any range gives the same ranking
    frames = []
    for s, b in zip(latent_frames(sage), latent_frames(base)):
        e = errors(s, b)
        frames.append({"cos": e.cos, "rel_l1": e.rel_l1, "psnr": psnr(s, b, data_range)})
    return {"data_range": data_range, "frames": frames, **_means(frames)}


def image_metrics(sage: torch.Tensor, base: torch.Tensor) -> dict:
    """Per-frame PSNR and SSIM of decoded ``(N, H, W, C)`` frames in [0, 1]."""
    if sage.shape != base.shape:
        raise ValueError(f"decoded frames: shapes differ: sage {tuple(sage.shape)}, baseline {tuple(base.shape)}")
    ssims = ssim(sage, base, 1.0)
    frames = [{"psnr": psnr(s, b, 1.0), "ssim": v} for s, b, v in zip(sage, base, ssims)]
    return {"frames": frames, **_means(frames)}


def _means(frames: list[dict]) -> dict:
    """Means per metric; PSNR's mean is taken over the MSEs (an average of inf and x is inf)."""
    out = {}
    for key in frames[0] if frames else ():
        values = [f[key] for f in frames]
        if key == "psnr":
            out["mean_psnr"] = _mean_psnr(values)
        else:
            out[f"mean_{key}"] = sum(values) / len(values)
    return out


def _mean_psnr(values: Sequence[float]) -> float:
    """PSNR of the mean MSE (each PSNR with the same range): 10·log10(1 / mean(10^(-p/10)))."""
    if any(math.isnan(v) for v in values):
        return float("nan")
    mses = [0.0 if math.isinf(v) else 10 ** (-v / 10) for v in values]
    mean = sum(mses) / len(mses)
    return float("inf") if mean == 0 else -10 * math.log10(mean)


# -- images ---------------------------------------------------------------------------------
# Black → red → yellow → white: dark means "no change", monotone in brightness.
_STOPS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float32)


def colormap(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (clamped) → RGB in [0, 1], a trailing dimension of 3."""
    x = x.float().clamp(0, 1) * (len(_STOPS) - 1)
    lo = x.floor().clamp(max=len(_STOPS) - 2).long()
    t = (x - lo).unsqueeze(-1)
    return _STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t


def heatmaps(sages: Sequence[torch.Tensor], base: torch.Tensor) -> tuple[torch.Tensor, float]:
    """|sage - baseline| per pixel (mean over channels), one frame per image, every Sage run's
    frames after the previous run's. One scale for all: the largest difference maps to white.
    Returns the IMAGE ``(runs·frames, H·s, W·s, 3)`` and that scale."""
    base_f = latent_frames(base).float()
    diffs = [(latent_frames(s).float() - base_f).abs().mean(dim=1) for s in sages]  # (frames, H, W)
    if not diffs:
        raise ValueError("heatmaps: no Sage latent to compare")
    diff = torch.cat(diffs)
    finite = diff[torch.isfinite(diff)]
    scale = float(finite.max()) if finite.numel() else 0.0
    normed = diff / scale if scale > 0 else torch.zeros_like(diff)
    normed = torch.where(torch.isfinite(diff), normed, torch.ones_like(normed))  # NaN/Inf shows as maximal
    return upscale(colormap(normed)), scale


def upscale(images: torch.Tensor, min_side: int = HEATMAP_MIN_SIDE) -> torch.Tensor:
    """Nearest-neighbour upscaling of ``(N, H, W, C)`` by the integer factor that brings the
    longer side to ``min_side`` (no blur: each latent pixel stays one flat square)."""
    factor = max(1, min_side // max(images.shape[1], images.shape[2]))
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def side_by_side(columns: Sequence[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Frames of several ``(N, H, W, C)`` batches placed left to right, white gaps between."""
    first = columns[0]
    for c in columns[1:]:
        if c.shape != first.shape:
            raise ValueError(f"side_by_side: shapes differ: {tuple(first.shape)} and {tuple(c.shape)}")
    n, h, _, ch = first.shape
    spacer = torch.ones(n, h, gap, ch, dtype=first.dtype, device=first.device)
    parts = []
    for i, c in enumerate(columns):
        parts += ([spacer] if i else []) + [c]
    return torch.cat(parts, dim=2)


def latent_preview(latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """Without a VAE: the first three latent channels of every frame as RGB, one min-max range
    for all runs (so brightness differences are real), runs side by side, upscaled."""
    frames = [latent_frames(x).float()[:, :3] for x in latents]
    frames = [f if f.shape[1] == 3 else f[:, :1].expand(-1, 3, -1, -1) for f in frames]
    lo = min(float(f.min()) for f in frames)
    hi = max(float(f.max()) for f in frames)
    span = hi - lo if hi > lo else 1.0
    images = [((f - lo) / span).clamp(0, 1).permute(0, 2, 3, 1) for f in frames]
    return side_by_side([upscale(i) for i in images])


# -- timing and memory ----------------------------------------------------------------------
class AttentionTimer:
    """Installed as the host's attention override around the real one (or around none, for
    the baseline), it times every attention call, quantized or not, so that the baseline and
    each Sage run are measured the same way. CUDA is synchronized around each call; calls
    traced by torch.compile are not timed."""

    def __init__(self, inner: Optional[Callable] = None):
        self.inner = inner
        self.calls = 0
        self.seconds = 0.0

    def __deepcopy__(self, memo):  # the host deep-copies model options: keep one set of totals
        return self

    def __copy__(self):
        return self

    def __call__(self, func, *args, **kwargs):
        if torch.compiler.is_compiling():
            return self._inner(func, *args, **kwargs)
        q = args[0] if args else kwargs.get("q")
        cuda = isinstance(q, torch.Tensor) and q.is_cuda
        if cuda:
            torch.cuda.synchronize(q.device)
        start = time.perf_counter()
        out = self._inner(func, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize(q.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def _inner(self, func, *args, **kwargs):
        return self.inner(func, *args, **kwargs) if self.inner is not None else func(*args, **kwargs)


class VramMeter:
    """Peak memory of one run: the device's peak allocation during the run, and how far it rose
    above what was allocated when the run started (what the run itself needed).

    The counters are injected (``torch.cuda`` by default) so that the bookkeeping is tested
    without a GPU; on a device without counters every figure is None."""

    def __init__(self, device: torch.device | str | None = None, allocated: Optional[Callable[[], int]] = None,
                 peak: Optional[Callable[[], int]] = None, reset_peak: Optional[Callable[[], None]] = None):
        device = torch.device(device) if device is not None else None
        if allocated is None and device is not None and device.type == "cuda" and torch.cuda.is_available():
            allocated = functools.partial(torch.cuda.memory_allocated, device)
            peak = functools.partial(torch.cuda.max_memory_allocated, device)
            reset_peak = functools.partial(torch.cuda.reset_peak_memory_stats, device)
        self._allocated, self._peak, self._reset = allocated, peak, reset_peak
        self._start: Optional[int] = None

    @property
    def available(self) -> bool:
        return self._allocated is not None and self._peak is not None

    def start(self) -> None:
        if not self.available:
            return
        if self._reset is not None:
            self._reset()
        self._start = int(self._allocated())

    def stop(self) -> dict:
        if not self.available or self._start is None:
            return {"peak_bytes": None, "extra_bytes": None}
        peak = int(self._peak())
        return {"peak_bytes": peak, "extra_bytes": max(0, peak - self._start)}


# -- the report -----------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    """One sampling run: what it was, how long it took, what attention did."""

    label: str
    wall_s: float
    attention_s: Optional[float] = None
    attention_calls: Optional[int] = None
    peak_bytes: Optional[int] = None
    extra_bytes: Optional[int] = None
    settings: Optional[dict] = None  # the Sage settings (None for the baseline)
    stats: Optional[dict] = None  # the override's statistics of this run: calls, ours, fallback, backends

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def speedup(baseline_s: Optional[float], other_s: Optional[float]) -> Optional[float]:
    """baseline / other (above 1: faster than the baseline); None without two positive times."""
    if baseline_s is None or other_s is None or not baseline_s > 0 or not other_s > 0:
        return None
    return baseline_s / other_s


def build_report(baseline: RunResult, runs: Sequence[RunResult], base_latent: torch.Tensor,
                 sage_latents: Sequence[torch.Tensor], device: str, heatmap_scale: Optional[float] = None,
                 base_images: Optional[torch.Tensor] = None, sage_images: Optional[Sequence[torch.Tensor]] = None,
                 extra: Optional[dict] = None) -> dict:
    """The structured report: each Sage run against the baseline."""
    comparisons = []
    for i, (run, latent) in enumerate(zip(runs, sage_latents)):
        entry = {
            "label": run.label,
            "speedup": speedup(baseline.wall_s, run.wall_s),
            "attention_speedup": speedup(baseline.attention_s, run.attention_s),
            "latent": latent_metrics(latent, base_latent),
            "decoded": None,
        }
        if base_images is not None and sage_images is not None:
            entry["decoded"] = image_metrics(sage_images[i], base_images)
        comparisons.append(entry)
    return {
        "device": device,
        "timing_note": _timing_note(device),
        "latent_shape": list(base_latent.shape),
        "frames": int(latent_frames(base_latent).shape[0]),
        "heatmap_scale": heatmap_scale,
        "baseline": baseline.as_dict(),
        "runs": [r.as_dict() for r in runs],
        "comparisons": comparisons,
        **(extra or {}),
    }


def _timing_note(device: str) -> str:
    if device.startswith("cuda"):
        return "GPU timings (CUDA synchronized around each attention call)"
    return (f"{device.upper()} timings: quantized attention is made for NVIDIA GPUs; on the CPU it runs the "
            "reference emulation, which is slower than PyTorch's attention by design")


def _fmt(value, spec: str, suffix: str = "", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf" + suffix
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return format(value, spec) + suffix


def _mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def format_report(report: dict) -> str:
    """The report as the node's STRING output (and the web extension's plain-text fallback)."""
    lines = [f"Sage compare: {report['frames']} frame(s), latent {tuple(report['latent_shape'])}, "
             f"{report['timing_note']}"]
    header = f"{'run':<28} {'wall s':>8} {'attn s':>8} {'speed-up':>9} {'attn x':>7} {'peak VRAM':>10}  calls"
    lines += [header, "-" * len(header)]
    base = report["baseline"]
    lines.append(f"{base['label'][:28]:<28} {_fmt(base['wall_s'], '8.3f'):>8} {_fmt(base['attention_s'], '8.3f'):>8} "
                 f"{'1.00x':>9} {'1.00x':>7} {_mib(base['peak_bytes']):>10}  {_fmt(base['attention_calls'], 'd')}")
    for run, cmp in zip(report["runs"], report["comparisons"]):
        stats = run.get("stats") or {}
        calls = f"{stats.get('ours', 0)}/{stats.get('calls', 0)} quantized" if stats else "-"
        lines.append(f"{run['label'][:28]:<28} {_fmt(run['wall_s'], '8.3f'):>8} {_fmt(run['attention_s'], '8.3f'):>8} "
                     f"{_fmt(cmp['speedup'], '.2f', 'x'):>9} {_fmt(cmp['attention_speedup'], '.2f', 'x'):>7} "
                     f"{_mib(run['peak_bytes']):>10}  {calls}")
    for run, cmp in zip(report["runs"], report["comparisons"]):
        lines.append("")
        lines.append(f"{run['label']}:")
        stats = run.get("stats") or {}
        if stats.get("backends"):
            lines.append("  backends: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["backends"].items())))
        for reason, n in sorted((stats.get("fallback") or {}).items(), key=lambda kv: -kv[1]):
            lines.append(f"  host attention: {n} call(s): {reason}")
        lat = cmp["latent"]
        lines.append(f"  latent vs baseline: cos {_fmt(lat['mean_cos'], '.5f')}, rel-L1 {_fmt(lat['mean_rel_l1'], '.4f')}, "
                     f"PSNR {_fmt(lat['mean_psnr'], '.1f', ' dB')} (range {lat['data_range']:.3g})")
        if len(lat["frames"]) > 1:
            lines.append("  per frame PSNR: " + " ".join(_fmt(f["psnr"], ".1f") for f in lat["frames"]))
        dec = cmp.get("decoded")
        if dec:
            lines.append(f"  decoded frames: PSNR {_fmt(dec['mean_psnr'], '.1f', ' dB')}, "
                         f"SSIM {_fmt(dec['mean_ssim'], '.4f')}")
            if len(dec["frames"]) > 1:
                lines.append("  per frame SSIM: " + " ".join(_fmt(f["ssim"], ".3f") for f in dec["frames"]))
    if report.get("heatmap_scale") is not None:
        lines.append("")
        lines.append(f"heatmap: white = |difference| {report['heatmap_scale']:.3g} (mean over latent channels)")
    return "\n".join(lines)


def json_safe(value):
    """The report with non-finite floats as strings ("inf", "-inf", "NaN"): JSON has no such
    numbers, and the browser's JSON.parse rejects Python's Infinity/NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
