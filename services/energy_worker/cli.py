"""``joulestream energy-worker``: join power with scenarios → scenario.energy."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_energy(a: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from shared.httpserver import Health
    from shared.kafka import StopSignal, ensure_topics, run_worker, with_retry
    from shared.service import run as run_service
    from shared.settings import KafkaSettings

    from .app import EnergyProcessor, ensure_baselines_topic
    from .logic import JoinConfig

    cfg = JoinConfig(timeout_s=a.timeout, grace_s=a.grace)

    async def main(reg: CollectorRegistry, health: Health, stop: StopSignal) -> None:
        kafka = KafkaSettings()

        async def topics() -> None:
            await ensure_baselines_topic(kafka)
            await ensure_topics(kafka)

        # the broker may not be up yet: wait for it (not ready on /healthz meanwhile)
        if not await with_retry("creating topics", topics, stop, health):
            return
        await run_worker(EnergyProcessor(reg, cfg, kafka), kafka, a.group, reg, health, stop)

    run_service("energy_worker", main)
    return 0


def register(sub: Any) -> None:
    e = sub.add_parser("energy-worker", help="join power with scenarios → scenario.energy")
    e.add_argument("--group", default="joulestream-energy", help="consumer group")
    e.add_argument("--timeout", type=float, default=30.0,
                   help="emit without full coverage this many seconds after a scenario ends")
    e.add_argument("--grace", type=float, default=120.0,
                   help="seconds of samples kept behind the newest")
    e.set_defaults(fn=cmd_energy)
