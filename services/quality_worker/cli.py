"""``joulestream quality-score``: score one encode the way the quality worker does, no Kafka.

    joulestream quality-score REFERENCE DISTORTED [--duration S] [--fps F] [--model M]
                              [--subsample N] [--threads T] [--out-dir DIR]

Prints the ``quality.results`` record as JSON (per-frame scores go to ``--out-dir``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas.scenario_events import EncodeSettings, ScenarioFinished
from shared.kafka import BadInput

from .app import QualityProcessor
from .config import QualityConfig


def cmd_score(a: argparse.Namespace) -> int:
    ref, dist = os.path.abspath(a.reference), os.path.abspath(a.distorted)
    overrides: dict[str, Any] = {"vmaf_model": a.model, "subsample": a.subsample}
    if a.threads:
        overrides["threads"] = a.threads
    try:
        cfg = QualityConfig(
            # the user named these files: their directories are the media roots
            media_roots=sorted({os.path.dirname(ref), os.path.dirname(dist)}),
            out_dir=a.out_dir or tempfile.mkdtemp(prefix="joulestream-quality-"), **overrides)
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    now = time.time_ns()
    ev = ScenarioFinished(
        event_id="cli-finished", scenario_id="cli", host="cli", start_ns=now, end_ns=now,
        frames=0, cpu_s=0.0, output_path=dist, reference_path=ref,
        settings=EncodeSettings(codec="unknown", fps=a.fps or 0.0,
                                duration_s=a.duration or 0.0))
    try:
        res = asyncio.run(QualityProcessor(CollectorRegistry(), cfg).score(ev))
    except BadInput as e:
        print(f"error ({e.error_type}): {e.reason}", file=sys.stderr)
        return 1
    print(res.model_dump_json(indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("quality-score", help="VMAF/PSNR/SSIM of one encode (no Kafka); JSON")
    p.add_argument("reference")
    p.add_argument("distorted")
    p.add_argument("--duration", type=float, help="seconds of both to compare (default: all)")
    p.add_argument("--fps", type=float, help="pair frames at this rate (default: reference's)")
    p.add_argument("--model", default="auto", help="'auto' (by resolution) or a libvmaf model")
    p.add_argument("--subsample", type=int, default=1, help="score every n-th frame")
    p.add_argument("--threads", type=int, help="libvmaf n_threads (default: all CPUs)")
    p.add_argument("--out-dir", help="where the per-frame scores file goes")
    p.set_defaults(fn=cmd_score)
