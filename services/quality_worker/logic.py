"""Quality measurement, pure parts: the one-pass libvmaf command and parsing its JSON log."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


class UnsafePath(ValueError):
    pass


def safe_media_path(path: str, roots: list[str]) -> Path:
    """Resolve ``path`` and require it to lie under one of ``roots`` (symlinks resolved)."""
    if not path or "\x00" in path:
        raise UnsafePath("empty path or NUL byte in path")
    real = Path(os.path.realpath(path))
    for root in roots:
        r = Path(os.path.realpath(root))
        if real == r or r in real.parents:
            return real
    raise UnsafePath(f"{path!r} is outside the configured media roots {roots}")


def vmaf_model_for(height: int) -> str:
    """Netflix's guidance: the default model up to 1080p, the 4K model above."""
    return "vmaf_4k_v0.6.1" if height > 1080 else "vmaf_v0.6.1"


def build_command(
    ffmpeg: str, distorted: str, reference: str, ref_w: int, ref_h: int, log_path: str,
    model: str, duration_s: float | None, threads: int, fps: float | None = None,
    subsample: int = 1,
) -> list[str]:
    """VMAF (+NEG), PSNR and SSIM in one libvmaf pass.  The distorted video is scaled to the
    reference resolution with bicubic, and both inputs are read at the same frame rate with
    timestamps reset, so frames pair up one to one."""
    neg = model.replace("v0.6.1", "v0.6.1neg") if "4k" not in model else None
    # two escaping levels: the filter-option parser and the filtergraph parser each take one
    models = f"version={model}\\\\:name=vmaf"
    if neg:
        models += f"|version={neg}\\\\:name=vmaf_neg"
    opts = [
        f"model={models}", "feature=name=psnr|name=float_ssim", "log_fmt=json",
        f"log_path={log_path}", f"n_threads={max(1, threads)}",
    ]
    if subsample > 1:
        opts.append(f"n_subsample={subsample}")
    rate = f",fps={fps}" if fps else ""
    graph = (
        f"[0:v]scale={ref_w}:{ref_h}:flags=bicubic{rate},setpts=PTS-STARTPTS,format=yuv420p[d];"
        f"[1:v]scale={ref_w}:{ref_h}{rate},setpts=PTS-STARTPTS,format=yuv420p[r];"
        f"[d][r]libvmaf={':'.join(opts)}"
    )
    cmd = [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error"]
    t = ["-t", f"{duration_s:.6f}"] if duration_s else []
    cmd += [*t, "-i", distorted, *t, "-i", reference, "-lavfi", graph, "-an", "-f", "null", "-"]
    return cmd


def pooled(values: list[float]) -> dict[str, float | None]:
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if a.size == 0:
        raise ValueError("no finite per-frame values")
    hm = None
    if np.all(a > 0):
        hm = float(a.size / np.sum(1.0 / a))
    return {"mean": float(a.mean()), "harmonic_mean": hm, "min": float(a.min()),
            "p1": float(np.percentile(a, 1)), "p5": float(np.percentile(a, 5))}


def parse_vmaf_log(doc: dict) -> dict:
    """Per-frame arrays and pooled statistics from libvmaf's JSON log.

    PSNR is pooled from per-frame MSE, not by averaging dB values: frames with identical
    content have infinite PSNR, which libvmaf caps; the average-PSNR of Y, Cb, Cr uses the
    6:1:1 weighting of 4:2:0 sampling.
    """
    frames = doc.get("frames") or []
    if not frames:
        raise ValueError("libvmaf log has no frames")
    series: dict[str, list[float]] = {}
    for f in frames:
        for k, v in f.get("metrics", {}).items():
            series.setdefault(k, []).append(float(v))
    out: dict = {"frames": len(frames), "version": str(doc.get("version", "unknown"))}
    out["pooled"] = {k: pooled(series[k]) for k in ("vmaf", "vmaf_neg", "psnr_y", "float_ssim")
                     if k in series}

    def psnr_from_mse(db: list[float]) -> float:
        mse = np.mean([10 ** (-d / 10) for d in db])
        return float(-10 * math.log10(mse)) if mse > 0 else 100.0

    if "psnr_y" in series:
        out["psnr_y"] = psnr_from_mse(series["psnr_y"])
        if "psnr_cb" in series and "psnr_cr" in series:
            avg = [(6 * 10 ** (-y / 10) + 10 ** (-b / 10) + 10 ** (-r / 10)) / 8
                   for y, b, r in zip(series["psnr_y"], series["psnr_cb"], series["psnr_cr"],
                                      strict=False)]
            m = float(np.mean(avg))
            out["psnr_avg"] = float(-10 * math.log10(m)) if m > 0 else 100.0
    out["per_frame"] = {k: series[k] for k in ("vmaf", "vmaf_neg", "psnr_y", "float_ssim")
                        if k in series}
    return out
