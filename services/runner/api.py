"""A small Python API for any tool that wants its work measured: publish scenario events.

Usage (see docs/runner.md)::

    from schemas.scenario_events import EncodeSettings
    from services.runner.api import ScenarioClient

    async with ScenarioClient(host="encoder-7") as client:
        async with client.scenario("my-job-42", EncodeSettings(codec="libx264")) as sc:
            run_my_encoder()          # anything; exceptions publish a ``failed`` event
            sc.frames = 250           # optional details for the ``finished`` event
            sc.output_path = "/data/out.mkv"

or explicitly: ``h = await client.start(id, settings)`` then ``await client.finish(h, ...)``
or ``await client.fail(h, exit_code=..., stderr_tail=...)``.

Events are keyed by host, so they join with that host's ``power.samples``.  The ``host``
must be the name the power collector on the same machine publishes under
(``JOULESTREAM_HOST``, default: the hostname).  CPU seconds default to this process's own
user+system time plus that of children it has waited for (``getrusage``), over the window.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from schemas import scenario_events
from schemas.scenario_events import (
    EncodeSettings,
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
)
from shared.hardware import host_hardware
from shared.kafka import ensure_topics, make_producer
from shared.settings import KafkaSettings, ServiceSettings


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class ScenarioHandle:
    """A started scenario.  Set the optional attributes before it finishes."""

    scenario_id: str
    settings: EncodeSettings
    start_ns: int
    start_mono_ns: int
    cpu0_s: float
    frames: int = 0
    cpu_s: float | None = None  # None → measured by getrusage over the window
    output_path: str | None = None
    reference_path: str | None = None
    output_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more ScenarioFinished fields


class ScenarioClient:
    """Publishes ``started`` / ``finished`` / ``failed`` events to ``scenario.events``.

    ``kafka`` defaults to the environment (``KAFKA_BOOTSTRAP_SERVERS`` …); ``host`` to
    ``JOULESTREAM_HOST`` or the hostname.  Each publish waits for the broker's ack."""

    def __init__(self, kafka: KafkaSettings | None = None, host: str | None = None,
                 run_id: str | None = None, hardware: bool = True) -> None:
        self.kafka = kafka or KafkaSettings()
        self.host = host or ServiceSettings().host
        self.run_id = run_id
        self.hardware = hardware
        self._producer: Any = None

    async def open(self) -> ScenarioClient:
        await ensure_topics(self.kafka, [scenario_events.TOPIC])
        self._producer = make_producer(self.kafka)
        await self._producer.start()
        return self

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> ScenarioClient:
        return await self.open()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def publish(self, ev: ScenarioStarted | ScenarioFinished | ScenarioFailed) -> None:
        if self._producer is None:
            raise RuntimeError("ScenarioClient is not open (use 'async with' or open())")
        await self._producer.send_and_wait(self.kafka.topic(scenario_events.TOPIC),
                                           ev.to_bytes(), key=ev.host.encode())

    async def start(self, scenario_id: str, settings: EncodeSettings,
                    pid: int | None = None) -> ScenarioHandle:
        """Publish ``started`` now and return the handle to finish or fail it."""
        h = ScenarioHandle(scenario_id, settings, time.time_ns(), time.monotonic_ns(), _cpu_s())
        await self.publish(ScenarioStarted(
            event_id=f"{scenario_id}:started", scenario_id=scenario_id, host=self.host,
            run_id=self.run_id, settings=settings, start_ns=h.start_ns,
            pid=os.getpid() if pid is None else pid, start_mono_ns=h.start_mono_ns))
        return h

    async def finish(self, h: ScenarioHandle, **fields: Any) -> ScenarioFinished:
        """Publish ``finished`` now; ``fields`` override the handle's attributes (frames,
        cpu_s, output_path, output_bytes, achieved_fps, …)."""
        for k in ("frames", "cpu_s", "output_path", "reference_path", "output_bytes"):
            if k in fields:
                setattr(h, k, fields.pop(k))
        end_ns, end_mono = time.time_ns(), time.monotonic_ns()
        cpu = h.cpu_s if h.cpu_s is not None else max(0.0, _cpu_s() - h.cpu0_s)
        extra = {**h.extra, **fields}
        if self.hardware and "hardware" not in extra:
            extra["hardware"] = host_hardware()
        ev = ScenarioFinished(
            event_id=f"{h.scenario_id}:finished", scenario_id=h.scenario_id, host=self.host,
            run_id=self.run_id, settings=h.settings, start_ns=h.start_ns, end_ns=end_ns,
            frames=h.frames, cpu_s=cpu, output_path=h.output_path,
            reference_path=h.reference_path, output_bytes=h.output_bytes,
            start_mono_ns=h.start_mono_ns, end_mono_ns=end_mono, **extra)
        await self.publish(ev)
        return ev

    async def fail(self, h: ScenarioHandle, exit_code: int | None = None,
                   stderr_tail: str = "") -> ScenarioFailed:
        """Publish ``failed`` now (the window still counts as load on the host)."""
        ev = ScenarioFailed(
            event_id=f"{h.scenario_id}:failed", scenario_id=h.scenario_id, host=self.host,
            run_id=self.run_id, settings=h.settings, start_ns=h.start_ns,
            end_ns=time.time_ns(), exit_code=exit_code, stderr_tail=stderr_tail[-3000:],
            cpu_s=h.cpu_s if h.cpu_s is not None else max(0.0, _cpu_s() - h.cpu0_s),
            start_mono_ns=h.start_mono_ns, end_mono_ns=time.monotonic_ns())
        await self.publish(ev)
        return ev

    @asynccontextmanager
    async def scenario(self, scenario_id: str, settings: EncodeSettings
                       ) -> AsyncIterator[ScenarioHandle]:
        """``started`` on entry; ``finished`` on normal exit; ``failed`` (with the exception
        as stderr_tail) if the body raises — the exception is then re-raised."""
        h = await self.start(scenario_id, settings)
        try:
            yield h
        except BaseException as e:
            await self.fail(h, exit_code=None, stderr_tail=f"{type(e).__name__}: {e}")
            raise
        await self.finish(h)
