"""Running one service: logging, the /metrics + /healthz endpoint, signals, asyncio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from .httpserver import Health, MetricsServer
from .kafka import StopSignal
from .settings import ServiceSettings

ServiceMain = Callable[[CollectorRegistry, Health, StopSignal], Awaitable[None]]


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


async def serve(name: str, main: ServiceMain, settings: ServiceSettings | None = None) -> None:
    """Run ``main`` with its own registry, health state and HTTP endpoint until stopped."""
    settings = settings or ServiceSettings()
    registry = CollectorRegistry()
    health = Health()
    stop = StopSignal()
    stop.install()
    server = None
    if settings.metrics_port >= 0:
        server = MetricsServer(registry, health, settings.metrics_port, settings.metrics_addr)
        server.start()
        logging.getLogger(name).info(
            "%s: metrics on http://%s:%d/metrics", name, settings.metrics_addr, server.port
        )
    try:
        await main(registry, health, stop)
    finally:
        if server:
            server.stop()


def run(name: str, main: ServiceMain, settings: ServiceSettings | None = None) -> None:
    settings = settings or ServiceSettings()
    setup_logging(settings.log_level)
    asyncio.run(serve(name, main, settings))
