"""power_collector settings (env prefix ``JOULESTREAM_COLLECTOR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the sources a collector can open; ``auto`` picks (see docs/power.md)
SOURCE_NAMES = ("rapl", "nvml", "mqtt", "estimate")


class CollectorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_COLLECTOR_", frozen=True,
                                      extra="ignore")

    #: ``auto``, or a comma-separated list of rapl, nvml, mqtt, estimate (each must be
    #: available, else the collector stops with the reason)
    source: str = "auto"
    powercap_root: str = "/sys/class/powercap"
    #: sampling interval, 10 ms … 10 s
    interval_s: float = Field(default=0.1, ge=0.01, le=10.0)
    #: a batch is published when it holds this many samples or is this old
    batch_max_samples: int = Field(default=50, ge=1, le=100_000)
    batch_max_age_s: float = Field(default=0.25, ge=0.0, le=60.0)
    #: samples kept per stream while the broker is unreachable (100 ms × 36 000 = 1 h)
    spool_max_samples: int = Field(default=36_000, ge=1)
    #: CPU-time model parameters (None → documented defaults from the CPU count)
    estimate_idle_w: float | None = Field(default=None, ge=0)
    estimate_max_w: float | None = Field(default=None, gt=0)

    # ---- smart plug over MQTT (wall power) -----------------------------------------------
    #: MQTT broker of the plug; unset → no plug (``auto`` then skips it)
    mqtt_host: str | None = None
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    #: payload form: Tasmota ``tele/<device>/SENSOR``, Shelly Gen2 ``<id>/events/rpc``, or
    #: any JSON with the field paths below
    mqtt_format: Literal["tasmota", "shelly", "generic"] = "tasmota"
    #: the plug's device name/topic (Tasmota topic, Shelly id); the zone is ``plug:<device>``
    mqtt_device: str = "plug"
    #: topic to subscribe to; default: tele/<device>/SENSOR (Tasmota), <device>/events/rpc
    #: (Shelly); required for ``generic``
    mqtt_topic: str | None = None
    #: Shelly component carrying the meter
    mqtt_shelly_component: str = "switch:0"
    #: generic form: dotted paths to power (W) and to the energy counter, and its unit
    mqtt_power_path: str | None = None
    mqtt_energy_path: str | None = None
    mqtt_energy_unit: Literal["J", "Wh", "kWh"] = "Wh"
    #: use the plug's energy counter when it reports one (else integrate power)
    mqtt_prefer_counter: bool = True

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip().lower()
        if v == "auto":
            return v
        names = [s.strip() for s in v.split(",") if s.strip()]
        bad = [s for s in names if s not in SOURCE_NAMES]
        if not names or bad:
            raise ValueError(f"source must be 'auto' or a comma list of {SOURCE_NAMES}, got {v!r}")
        if "rapl" in names and "estimate" in names:
            raise ValueError("rapl and estimate measure the same thing; choose one")
        return ",".join(dict.fromkeys(names))

    @property
    def source_names(self) -> list[str]:
        """The explicitly requested sources (empty for ``auto``)."""
        return [] if self.source == "auto" else self.source.split(",")

    def plug_topic(self) -> str:
        if self.mqtt_topic:
            return self.mqtt_topic
        if self.mqtt_format == "tasmota":
            return f"tele/{self.mqtt_device}/SENSOR"
        if self.mqtt_format == "shelly":
            return f"{self.mqtt_device}/events/rpc"
        raise ValueError("mqtt_format 'generic' needs mqtt_topic")
