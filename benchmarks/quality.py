"""``joulestream bench quality``: the quality worker's scoring throughput against the physical
limit on this machine, a bare ``ffmpeg -lavfi libvmaf`` run of the same metrics and threads.

Worker = ``QualityProcessor.score`` end to end (path checks, two probes, the aligned libvmaf
pass, JSON parsing, pooling, the per-frame file).  Bare = one ffmpeg process: the distorted
video scaled bicubic to the reference size, libvmaf with the same models (VMAF + NEG), PSNR
and float SSIM, the same ``n_threads``, its JSON log to a pipe.  Runs alternate bare/worker so
a noisy neighbour hits both alike; figures are medians.  Inputs: the natural clip (720p,
25 fps) as the 720p reference, and the clip upscaled once losslessly (x264 qp 0) to 1080p;
the distorted videos are x264 veryfast encodes in MKV.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from schemas.scenario_events import EncodeSettings, ScenarioFinished
from services.quality_worker.app import QualityProcessor
from services.quality_worker.config import QualityConfig
from services.quality_worker.logic import neg_model_for, vmaf_model_for
from shared.ffmpeg import ffmpeg_exe, ffmpeg_version, natural_clip

from ._report import machine


def _ff(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", *args],
                   check=True)


def _prepare(d: Path, duration_s: float) -> dict[str, tuple[Path, Path, int, int]]:
    """{label: (reference, distorted, width, height)} — encodes made once, not timed."""
    clip = natural_clip()
    x264 = ["-c:v", "libx264", "-preset", "veryfast"]
    ref720 = d / "ref720.mkv"
    _ff("-t", f"{duration_s}", "-i", clip, "-an", "-c:v", "copy", str(ref720))
    dist720 = d / "dist720.mkv"
    _ff("-i", str(ref720), *x264, "-b:v", "1000k", str(dist720))
    ref1080 = d / "ref1080.mkv"  # lossless upscale (H.264 qp 0)
    _ff("-i", str(ref720), "-vf", "scale=1920:1080:flags=bicubic", "-c:v", "libx264",
        "-preset", "ultrafast", "-qp", "0", str(ref1080))
    dist1080 = d / "dist1080.mkv"
    _ff("-i", str(ref1080), *x264, "-b:v", "2500k", str(dist1080))
    return {"720p": (ref720, dist720, 1280, 720), "1080p": (ref1080, dist1080, 1920, 1080)}


def bare_command(ref: Path, dist: Path, w: int, h: int, threads: int) -> list[str]:
    model = vmaf_model_for(h)
    neg = neg_model_for(model)
    lavfi = (f"[0:v]scale={w}:{h}:flags=bicubic[d];[d][1:v]libvmaf="
             f"model=version={model}\\\\:name=vmaf|version={neg}\\\\:name=vmaf_neg:"
             f"feature=name=psnr|name=float_ssim:n_threads={threads}:"
             f"log_fmt=json:log_path=/dev/stdout")
    return [ffmpeg_exe(), "-hide_banner", "-nostats", "-nostdin", "-loglevel", "error",
            "-i", str(dist), "-i", str(ref), "-lavfi", lavfi, "-an", "-f", "null", "-"]


def _event(ref: Path, dist: Path, duration_s: float) -> ScenarioFinished:
    now = time.time_ns()
    return ScenarioFinished(
        event_id="bench-finished", scenario_id="bench", host="bench", start_ns=now,
        end_ns=now, frames=0, cpu_s=0.0, output_path=str(dist), reference_path=str(ref),
        settings=EncodeSettings(codec="libx264", preset="veryfast", duration_s=duration_s))


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run(quick: bool = False) -> dict[str, Any]:
    runs = 2 if quick else 5
    duration_s = 2.0 if quick else 5.0
    threads = os.cpu_count() or 1
    out: dict[str, Any] = {"runs": runs, "threads": threads, "content_s": duration_s,
                           "ffmpeg": ffmpeg_version(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="jsbench-quality-") as tmp:
        d = Path(tmp)
        inputs = _prepare(d, duration_s)
        proc = QualityProcessor(CollectorRegistry(), QualityConfig(
            media_roots=[str(d)], out_dir=str(d / "q"), threads=threads))
        for label, (ref, dist, w, h) in inputs.items():
            ev = _event(ref, dist, duration_s)
            bare_s: list[float] = []
            worker_s: list[float] = []
            bare_cpu: list[float] = []
            worker_cpu: list[float] = []
            frames = 0
            vmaf = vmaf_bare = 0.0
            for _ in range(runs):
                c0, t0 = _cpu_s(), time.perf_counter()
                log = subprocess.run(bare_command(ref, dist, w, h, threads), check=True,
                                     stdout=subprocess.PIPE).stdout
                bare_s.append(time.perf_counter() - t0)
                bare_cpu.append(_cpu_s() - c0)
                vmaf_bare = float(json.loads(log)["pooled_metrics"]["vmaf"]["mean"])
                c0, t0 = _cpu_s(), time.perf_counter()
                res = asyncio.run(proc.score(ev))
                worker_s.append(time.perf_counter() - t0)
                worker_cpu.append(_cpu_s() - c0)
                frames, vmaf = res.frames_scored, res.vmaf
            b, wk = statistics.median(bare_s), statistics.median(worker_s)
            out[f"fps_{label}"] = round(frames / wk, 2)
            out[f"fps_bare_{label}"] = round(frames / b, 2)
            out[f"overhead_pct_{label}"] = round((wk / b - 1) * 100, 1)
            # CPU seconds (this process + children) suffer less from a noisy neighbour
            out[f"overhead_cpu_pct_{label}"] = round(
                (statistics.median(worker_cpu) / statistics.median(bare_cpu) - 1) * 100, 1)
            out[f"frames_{label}"] = frames
            out[f"vmaf_{label}"] = round(vmaf, 2)
            out[f"vmaf_bare_{label}"] = round(vmaf_bare, 2)
            out[f"worker_s_{label}"] = [round(x, 3) for x in worker_s]
            out[f"bare_s_{label}"] = [round(x, 3) for x in bare_s]
    out["goal_overhead_pct"] = 10.0
    return out
