"""Topic ``quality.results`` — VMAF / PSNR / SSIM of one encode against its reference.

Key: scenario_id.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Event, FiniteFloat, Name, NonNegFloat, ShortText

TOPIC = "quality.results"
SCHEMA_VERSION = 1


class Pooled(Event):
    """Pooled statistics of one per-frame metric."""

    mean: FiniteFloat
    harmonic_mean: FiniteFloat | None = None
    min: FiniteFloat
    p1: FiniteFloat | None = None
    p5: FiniteFloat | None = None


class QualityResult(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    scenario_id: Name
    host: Name
    vmaf: NonNegFloat
    vmaf_neg: NonNegFloat | None = None
    psnr_y: FiniteFloat | None = None
    psnr_avg: FiniteFloat | None = None
    ssim: FiniteFloat | None = None
    pooled: dict[Name, Pooled] = Field(default_factory=dict)
    vmaf_model: Name  # libvmaf built-in model id of ``vmaf``
    vmaf_neg_model: Name | None = None  # model id of ``vmaf_neg`` (its NEG twin)
    frames_scored: int = Field(ge=0)
    frames_reference: int = Field(ge=0)
    subsample: int = Field(default=1, ge=1)  # libvmaf n_subsample: every n-th frame scored
    frame_rate: NonNegFloat | None = None  # frames/s both inputs were resampled to for pairing
    ref_width: int | None = Field(default=None, ge=0)  # resolution scores were computed at
    ref_height: int | None = Field(default=None, ge=0)
    compute_s: NonNegFloat
    tool_version: ShortText  # ffmpeg / libvmaf version that produced the scores
    ffmpeg_version: ShortText | None = None
    libvmaf_version: ShortText | None = None
    scoring_fps: NonNegFloat | None = None  # frames scored per wall second (throughput)
    per_frame_path: str | None = Field(default=None, max_length=4096)
