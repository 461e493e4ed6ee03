"""quality_worker settings (env prefix ``JOULESTREAM_QUALITY_``)."""

from __future__ import annotations

import os

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .logic import BUILTIN_MODELS


class QualityConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_QUALITY_", frozen=True,
                                      extra="ignore")

    #: only files under these directories are ever read (paths in events are untrusted)
    media_roots: list[str] = Field(default_factory=lambda: [os.path.abspath("joulestream-data")])
    #: where per-frame score files are written
    out_dir: str = "joulestream-data/quality"
    #: libvmaf ``n_threads`` (libvmaf's own default, 0, means single-threaded)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    #: "auto" chooses by the reference's height (vmaf_v0.6.1 ≤ 1080p, vmaf_4k_v0.6.1 above);
    #: or a libvmaf built-in model name.  Its NEG twin is always scored beside it.
    vmaf_model: str = "auto"
    #: libvmaf ``n_subsample``: score every n-th frame (recorded in each result)
    subsample: int = Field(default=1, ge=1, le=100)
    #: a scoring job is killed (and its event dead-lettered) after this long
    timeout_s: float = Field(default=3600.0, gt=0)
    #: scoring jobs run at the same time in one worker (each uses ``threads`` threads)
    max_jobs: int = Field(default=1, ge=1, le=64)
    #: events accepted but not yet scored; above this, accepting waits for a job to finish
    max_queued: int = Field(default=1000, ge=1)
    #: ffmpeg executable ("" = the one joulestream finds: JOULESTREAM_FFMPEG or imageio-ffmpeg)
    ffmpeg: str = ""

    @field_validator("vmaf_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v != "auto" and v not in BUILTIN_MODELS:
            raise ValueError(f"vmaf_model must be 'auto' or one of {BUILTIN_MODELS}")
        return v
