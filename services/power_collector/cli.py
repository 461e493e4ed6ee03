"""``joulestream power-collector`` options for the sources this package adds (NVML, MQTT
plugs, several sources at once).  ``services/cli.py`` defines the subcommand with the
original three sources; ``register`` widens it and takes over its handler."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from shared.httpserver import Health
from shared.kafka import StopSignal
from shared.service import run as run_service
from shared.settings import KafkaSettings, ServiceSettings

from .config import SOURCE_NAMES


def cmd_collector(a: argparse.Namespace) -> int:
    from .app import run_collector
    from .config import CollectorConfig
    from .sources import SourceUnavailable

    opts = {"source": a.source, "interval_s": a.interval, "powercap_root": a.powercap_root,
            "mqtt_host": a.mqtt_host, "mqtt_port": a.mqtt_port, "mqtt_format": a.mqtt_format,
            "mqtt_device": a.mqtt_device, "mqtt_topic": a.mqtt_topic}
    try:
        cfg = CollectorConfig(**{k: v for k, v in opts.items() if v is not None})
    except ValidationError as e:
        print(f"power-collector: invalid settings:\n{e}", file=sys.stderr)
        return 2
    settings = ServiceSettings()

    async def main(reg: CollectorRegistry, health: Health, stop: StopSignal) -> None:
        await run_collector(cfg, KafkaSettings(), reg, health, stop, settings.host)

    try:
        run_service("power_collector", main, settings)
    except SourceUnavailable as e:
        print(f"power-collector: source not available: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub: Any) -> None:
    p = sub.choices.get("power-collector")
    if p is None:  # the core CLI did not define it: define it here
        p = sub.add_parser("power-collector", help="sample host power → power.samples")
        p.add_argument("--source")
        p.add_argument("--interval", type=float, help="sampling interval in seconds")
        p.add_argument("--powercap-root")
    for action in p._actions:  # argparse has no public way to widen choices
        if action.dest == "source":
            action.choices = None
            action.help = ("auto (default: RAPL else the CPU-time estimate, plus NVIDIA GPUs, "
                           "plus the MQTT plug when configured) or a comma list of "
                           f"{', '.join(SOURCE_NAMES)}; an explicit source that is not "
                           "available is an error")
    p.add_argument("--mqtt-host", help="MQTT broker of the smart plug")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-format", choices=["tasmota", "shelly", "generic"])
    p.add_argument("--mqtt-device", help="plug name (Tasmota topic / Shelly id)")
    p.add_argument("--mqtt-topic", help="topic to subscribe (default from format and device)")
    p.set_defaults(fn=cmd_collector)
