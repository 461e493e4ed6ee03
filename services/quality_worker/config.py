"""quality_worker settings (env prefix ``JOULESTREAM_QUALITY_``)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QualityConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_QUALITY_", frozen=True,
                                      extra="ignore")

    #: only files under these directories are ever read (paths in events are untrusted)
    media_roots: list[str] = Field(default_factory=lambda: [os.path.abspath("joulestream-data")])
    #: where per-frame score files are written
    out_dir: str = "joulestream-data/quality"
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    #: "auto" chooses by resolution (vmaf_v0.6.1 ≤ 1080p, vmaf_4k_v0.6.1 above)
    vmaf_model: str = "auto"
    subsample: int = Field(default=1, ge=1, le=100)
    timeout_s: float = Field(default=3600.0, gt=0)
