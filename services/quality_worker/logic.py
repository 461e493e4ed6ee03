"""Quality measurement, pure parts: model choice, the one-pass libvmaf command, frame-count
checks and parsing libvmaf's JSON log.  No I/O here except :func:`safe_media_path`, which
resolves symlinks on the file system (that is the point of it)."""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

#: models built into libvmaf (loadable by ``version=`` without files) that this worker accepts
BUILTIN_MODELS = (
    "vmaf_v0.6.1", "vmaf_v0.6.1neg", "vmaf_4k_v0.6.1", "vmaf_4k_v0.6.1neg",
    "vmaf_float_v0.6.1", "vmaf_float_v0.6.1neg", "vmaf_float_4k_v0.6.1",
)
#: the per-frame series kept in the per-frame file and pooled in the result
SERIES = ("vmaf", "vmaf_neg", "psnr_y", "psnr_cb", "psnr_cr", "float_ssim")


class UnsafePath(ValueError):
    pass


def safe_media_path(path: str, roots: list[str]) -> Path:
    """Resolve ``path`` (symlinks, ``..``) and require the result to lie under one of
    ``roots`` (themselves resolved).  Raises :class:`UnsafePath` otherwise."""
    if not path or "\x00" in path:
        raise UnsafePath("empty path or NUL byte in path")
    if not os.path.isabs(path):
        raise UnsafePath(f"{path!r} is not an absolute path")
    real = Path(os.path.realpath(path))
    for root in roots:
        r = Path(os.path.realpath(root))
        if real == r or r in real.parents:
            return real
    raise UnsafePath(f"{path!r} resolves outside the configured media roots")


def vmaf_model_for(height: int) -> str:
    """Netflix's guidance: the default (1080p TV at 3H) model up to 1080p, the 4K model
    (4K TV at 1.5H) above."""
    return "vmaf_4k_v0.6.1" if height > 1080 else "vmaf_v0.6.1"


def choose_model(configured: str, ref_height: int) -> str:
    """``configured`` is ``"auto"`` (by the reference's height) or a built-in model name."""
    model = vmaf_model_for(ref_height) if configured == "auto" else configured
    if model not in BUILTIN_MODELS:
        raise ValueError(f"unknown VMAF model {model!r}; use one of {BUILTIN_MODELS}")
    return model


def neg_model_for(model: str) -> str | None:
    """The No-Enhancement-Gain twin of ``model`` (the one for comparing codecs), if libvmaf
    ships one: ``vmaf_v0.6.1`` → ``vmaf_v0.6.1neg``, ``vmaf_4k_v0.6.1`` →
    ``vmaf_4k_v0.6.1neg``.  None when ``model`` is itself a NEG model or has no twin."""
    if model.endswith("neg"):
        return None
    twin = model + "neg"
    return twin if twin in BUILTIN_MODELS else None


def build_command(
    ffmpeg: str, distorted: str, reference: str, ref_w: int, ref_h: int, model: str,
    duration_s: float | None, threads: int, fps: float | None = None, subsample: int = 1,
    neg_model: str | None = None, log_path: str = "/dev/stdout",
) -> list[str]:
    """VMAF (+ its NEG twin), PSNR and SSIM in one libvmaf pass.

    * The distorted video is scaled to the reference resolution with bicubic.
    * Frames are paired by time, not by arrival: both inputs get their timestamps reset to
      start at 0 and are resampled to the same constant rate ``fps`` (nearest frame), so an
      MKV's millisecond timestamps (33 ms < 33.3 ms) cannot pair a frame with the previous
      reference frame (the "VMAF 77 instead of 98" trap).
    * ``shortest=1:repeatlast=0``: only the overlap is scored, never a repeated last frame,
      so a truncated encode shows up as a frame-count mismatch instead of a score.
    * ``log_path`` goes into the filtergraph; the default ``/dev/stdout`` needs no escaping
      (the caller reads the JSON log from the process's stdout).
    """
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", log_path):
        raise ValueError("log_path must not contain filtergraph special characters")
    # two escaping levels: the filter-option parser and the filtergraph parser each take one
    models = f"version={model}\\\\:name=vmaf"
    if neg_model:
        models += f"|version={neg_model}\\\\:name=vmaf_neg"
    opts = [
        f"model={models}", "feature=name=psnr|name=float_ssim", "log_fmt=json",
        f"log_path={log_path}", f"n_threads={max(1, threads)}", "shortest=1", "repeatlast=0",
    ]
    if subsample > 1:
        opts.append(f"n_subsample={subsample}")
    rate = f",fps={fps:g}" if fps else ""
    graph = (
        f"[0:v]setpts=PTS-STARTPTS{rate},scale={ref_w}:{ref_h}:flags=bicubic,"
        f"format=yuv420p[d];"
        f"[1:v]setpts=PTS-STARTPTS{rate},format=yuv420p[r];"
        f"[d][r]libvmaf={':'.join(opts)}"
    )
    cmd = [ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "error"]
    t = ["-t", f"{duration_s:.6f}"] if duration_s else []
    cmd += [*t, "-i", distorted, *t, "-i", reference, "-lavfi", graph, "-an", "-f", "null", "-"]
    return cmd


def expected_frames(window_s: float, fps: float) -> int:
    """Frames a constant-rate ``fps`` stream has over ``window_s`` seconds."""
    return max(0, round(window_s * fps))


def frame_mismatch(scored: int, subsample: int, expected: int, exact_window: bool
                   ) -> str | None:
    """Why ``scored`` frames (libvmaf scores every ``subsample``-th) do not fit a reference
    window of ``expected`` frames, or None when they fit.

    ``exact_window``: the window came from the event (duration_s), so the count is known to
    ±1 frame; otherwise it came from the container duration (which may include a longer
    audio track), and 2 % is allowed."""
    want = math.ceil(expected / subsample)
    tol = 1 if exact_window else max(1, math.ceil(0.02 * want))
    if abs(scored - want) <= tol:
        return None
    sub = f" (every {subsample}th frame)" if subsample > 1 else ""
    return (f"frame count mismatch: scored {scored} frames{sub} but the reference window has "
            f"{expected} frames ({want} to score); the inputs are not aligned or one is "
            f"truncated")


def pooled(values: list[float]) -> dict[str, float | None]:
    """Mean, harmonic mean (None unless every value is > 0), min, 1st and 5th percentile."""
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if a.size == 0:
        raise ValueError("no finite per-frame values")
    hm = float(a.size / np.sum(1.0 / a)) if np.all(a > 0) else None
    return {"mean": float(a.mean()), "harmonic_mean": hm, "min": float(a.min()),
            "p1": float(np.percentile(a, 1)), "p5": float(np.percentile(a, 5))}


def _db_from_mse(mse: float) -> float:
    return float(-10 * math.log10(mse)) if mse > 0 else 100.0


def parse_vmaf_log(doc: dict[str, Any]) -> dict[str, Any]:
    """Per-frame arrays and pooled statistics from libvmaf's JSON log.

    PSNR is pooled from per-frame MSE, not by averaging dB values (identical frames have
    infinite PSNR, which libvmaf caps); average PSNR weights Y, Cb, Cr 4:1:1 by sample count
    in 4:2:0 (the usual 6:1:1 of codec papers weights by *importance*; we weight samples, so
    it is the PSNR of the whole frame's MSE)."""
    frames = doc.get("frames") or []
    if not frames:
        raise ValueError("libvmaf log has no frames")
    series: dict[str, list[float]] = {}
    frame_nums: list[int] = []
    for f in frames:
        frame_nums.append(int(f.get("frameNum", len(frame_nums))))
        for k, v in f.get("metrics", {}).items():
            series.setdefault(k, []).append(float(v))
    out: dict[str, Any] = {"frames": len(frames), "version": str(doc.get("version", "unknown"))}
    if "vmaf" not in series:
        raise ValueError("libvmaf log has no vmaf scores")
    out["pooled"] = {k: pooled(series[k]) for k in ("vmaf", "vmaf_neg", "psnr_y", "float_ssim")
                     if k in series}
    if "psnr_y" in series:
        y = [10 ** (-d / 10) for d in series["psnr_y"]]
        out["psnr_y"] = _db_from_mse(float(np.mean(y)))
        if "psnr_cb" in series and "psnr_cr" in series:
            cb = [10 ** (-d / 10) for d in series["psnr_cb"]]
            cr = [10 ** (-d / 10) for d in series["psnr_cr"]]
            whole = [(4 * a + b + c) / 6 for a, b, c in zip(y, cb, cr, strict=True)]
            out["psnr_avg"] = _db_from_mse(float(np.mean(whole)))
    out["per_frame"] = {"frame": frame_nums,
                        **{k: series[k] for k in SERIES if k in series}}
    return out


def file_stem(scenario_id: str) -> str:
    """A file-name-safe, collision-free stem for a scenario's per-frame file (scenario ids
    may contain ``/`` and ``:``)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", scenario_id)[:120]
    return f"{readable}-{hashlib.sha256(scenario_id.encode()).hexdigest()[:10]}"
