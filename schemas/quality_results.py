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
    vmaf_model: Name
    frames_scored: int = Field(ge=0)
    frames_reference: int = Field(ge=0)
    subsample: int = Field(default=1, ge=1)
    compute_s: NonNegFloat
    tool_version: ShortText  # ffmpeg / libvmaf version that produced the scores
    per_frame_path: str | None = Field(default=None, max_length=4096)
