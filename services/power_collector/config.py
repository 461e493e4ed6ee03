"""power_collector settings (env prefix ``JOULESTREAM_COLLECTOR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CollectorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_COLLECTOR_", frozen=True,
                                      extra="ignore")

    source: Literal["auto", "rapl", "estimate"] = "auto"
    powercap_root: str = "/sys/class/powercap"
    #: sampling interval, 10 ms … 10 s
    interval_s: float = Field(default=0.1, ge=0.01, le=10.0)
    #: a batch is published when it holds this many samples or is this old
    batch_max_samples: int = Field(default=50, ge=1, le=100_000)
    batch_max_age_s: float = Field(default=0.25, ge=0.0, le=60.0)
    #: samples kept while the broker is unreachable (100 ms × 36 000 = 1 h)
    spool_max_samples: int = Field(default=36_000, ge=1)
    #: CPU-time model parameters (None → documented defaults from the CPU count)
    estimate_idle_w: float | None = Field(default=None, ge=0)
    estimate_max_w: float | None = Field(default=None, gt=0)
