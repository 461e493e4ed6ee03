"""Power collector loop: sample on absolute deadlines, batch, publish to ``power.samples``.

One process, one or two **streams**, each with its own ``run_id``, zones, sequence numbers
and spool:

* the *component* stream: RAPL (or the CPU-time estimate) plus NVML GPUs, read together on
  each deadline; their zones do not overlap, so the host total is their sum;
* the *wall* stream: a smart plug over MQTT, one sample per plug report.

The energy worker keeps streams apart (a wall plug is never added to RAPL).

Sampling and publishing are decoupled: the sampler never waits for the broker.  Batches go
through a bounded spool; when the broker is unreachable they wait there (in order) and what
exceeds the bound is counted in ``joulestream_power_collector_dropped_samples_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from schemas.power_samples import TOPIC, PowerSamples, Zone
from shared.httpserver import Health
from shared.kafka import StopSignal, make_producer
from shared.settings import KafkaSettings

from .config import CollectorConfig
from .logic import Batcher
from .metrics import CollectorMetrics
from .mqtt import MqttPlug
from .sources import PolledSource, Reading, SourceUnavailable, open_component_sources

log = logging.getLogger("power_collector")


class Publisher:
    """One Kafka producer shared by the streams of a collector, (re)started lazily so that
    sampling starts even when the broker is not reachable yet."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        """Send and wait for the acknowledgement; raises KafkaError/OSError on failure."""
        async with self._lock:
            if self.producer is None:
                p = make_producer(self.kafka)
                try:
                    await p.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await p.stop()
                    raise
                self.producer = p
        await self.producer.send_and_wait(topic, value, key=key)

    async def close(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            self.producer = None


class Collector:
    """One stream: samples of one source; ``spool`` holds PowerSamples waiting to be sent.

    ``source`` is polled on deadlines by ``sample_loop``; a pushed source (the plug) calls
    ``record`` instead and passes its ``zones``.  ``clock_ns`` gives the wall-clock
    timestamp (UTC ns) of a sample; an argument so tests can drive time deterministically.
    """

    def __init__(
        self,
        source: PolledSource | None,
        host: str,
        interval_s: float,
        batch_max: int,
        batch_age_s: float,
        spool_max_samples: int,
        metrics: CollectorMetrics,
        *,
        zones: list[Zone] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.source = source
        self.host = host
        self.run_id = uuid.uuid4().hex[:16]
        self.interval_ns = round(interval_s * 1e9)
        if zones is None:
            if source is None:
                raise ValueError("a collector needs a source or zones")
            zones = source.zones()
        self.zones = zones
        self.batcher = Batcher(batch_max, int(batch_age_s * 1e9))
        self.spool: deque[PowerSamples] = deque()
        self.spool_samples = 0
        self.spool_max = spool_max_samples
        self.seq = 0
        self.metrics = metrics
        self.clock_ns = clock_ns
        self.drain_timeout_s = drain_timeout_s
        self.wakeup = asyncio.Event()
        self.sampling_done = False
        # the sampler runs in its own thread (see sample_loop); the spool is shared with the
        # publisher on the event loop, under this lock
        self._lock = threading.Lock()
        self._inflight: PowerSamples | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # label children looked up once: the hot path only sets values
        self._power = {z.name: metrics.power.labels(host, z.name, z.source, z.basis)
                       for z in zones}
        self._energy = {z.name: metrics.energy.labels(host, z.name, z.source, z.basis)
                        for z in zones}
        self._encoder: dict[str, Any] = {}
        self._last: Reading | None = None

    def record(self, r: Reading, mono_ns: int, ts_ns: int | None = None) -> None:
        """Turn one reading into a sample, batch it and update the metrics.

        The hot path: the sample is kept as a plain dict (the readings are finite,
        non-negative floats by construction of the sources); each batch is validated once,
        as a whole, in ``flush_batch``."""
        self.batcher.add({
            "seq": self.seq, "ts_ns": self.clock_ns() if ts_ns is None else ts_ns,
            "mono_ns": mono_ns,
            "energy_j": r.energy_j, "power_w": r.power_w,
            "wrap_ambiguous": r.wrap_ambiguous, "encoder_util_pct": r.encoder_util_pct,
        }, mono_ns)
        self.seq += 1
        self._last = r
        if self.batcher.due(mono_ns):
            self.flush_batch()

    def _update_gauges(self) -> None:
        """Per-zone gauges from the newest reading: once per batch, not per sample (a
        scrape every few seconds cannot tell, and it is a third of the hot path's cost)."""
        r = self._last
        if r is None:
            return
        for name, p in r.power_w.items():
            self._power[name].set(p)
        for name, j in r.energy_j.items():
            self._energy[name].set(j)
        for name, u in r.encoder_util_pct.items():
            g = self._encoder.get(name)
            if g is None:
                g = self._encoder[name] = self.metrics.encoder.labels(self.host, name)
            g.set(u / 100.0)

    def sample_once(self, mono_ns: int) -> None:
        """Read the polled source at ``mono_ns`` and record the sample."""
        assert self.source is not None
        ts_ns = self.clock_ns()  # both clocks stamped together, just before the read
        self.record(self.source.read(mono_ns), mono_ns, ts_ns)

    def flush_batch(self) -> None:
        samples = self.batcher.take()
        if not samples:
            return
        self._update_gauges()
        # one validation per batch (schema rules: finite, ordered, declared zones)
        msg = PowerSamples.model_validate({
            "host": self.host, "run_id": self.run_id, "zones": self.zones,
            "samples": samples})
        with self._lock:
            self.spool.append(msg)
            self.spool_samples += len(samples)
            # bounded spool: drop the oldest batches beyond the bound (never the one being
            # sent), counted and logged, never silent
            while self.spool_samples > self.spool_max and len(self.spool) > 1:
                i = 1 if self.spool[0] is self._inflight else 0
                if i >= len(self.spool) - 1:
                    break  # keep the newest batch
                old = self.spool[i]
                del self.spool[i]
                self.spool_samples -= len(old.samples)
                self.metrics.dropped.inc(len(old.samples))
                log.error("spool full: dropped %d samples (broker unreachable?)",
                          len(old.samples))
            self.metrics.spool.set(self.spool_samples)
        self._notify()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self.wakeup.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self.wakeup.set)

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _sample_thread(self, halt: threading.Event) -> None:
        """The sampler: absolute deadlines ``t0 + k·interval`` on the monotonic clock, so
        there is no drift; a deadline that has already passed when the loop gets to it is
        skipped and counted, not bunched.  A thread rather than the event loop: a wakeup
        costs a third of an asyncio one, and publishing never delays a sample."""
        next_ns = time.monotonic_ns()
        while not halt.is_set():
            now = time.monotonic_ns()
            self.metrics.lag.set(max(0, now - next_ns) / 1e9)
            try:
                self.sample_once(now)
            except (OSError, ValueError) as e:  # a transient read failure skips one sample
                self.metrics.read_errors.inc()
                log.warning("sample failed: %s", e)
            next_ns += self.interval_ns
            now = time.monotonic_ns()
            if next_ns <= now:  # overran: skip the deadlines already missed
                missed = (now - next_ns) // self.interval_ns + 1
                self.metrics.missed.inc(missed)
                next_ns += missed * self.interval_ns
            halt.wait((next_ns - now) / 1e9)

    async def sample_loop(self, stop: StopSignal) -> None:
        """Sample until ``stop`` (in a thread, see ``_sample_thread``), then ``finish``."""
        self._bind_loop()
        halt = threading.Event()
        thread = asyncio.ensure_future(asyncio.to_thread(self._sample_thread, halt))
        stop_wait = asyncio.ensure_future(stop.event.wait())
        try:
            await asyncio.wait((thread, stop_wait), return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.set()
            stop_wait.cancel()
            try:
                await thread  # re-raises what stopped the sampler (e.g. SourceUnavailable)
            finally:
                self.finish()

    def finish(self) -> None:
        """No more samples: flush the last batch and let the publisher drain and stop."""
        self.flush_batch()
        self.sampling_done = True
        self._notify()

    async def publish_loop(self, publisher: Publisher, health: Health,
                           topic: str = TOPIC) -> None:
        """Deliver spooled batches in order, retrying while the broker is unreachable.
        After sampling ends it keeps trying for ``drain_timeout_s``, then reports what is
        left unsent."""
        self._bind_loop()
        drain_deadline: float | None = None
        while True:
            if self.sampling_done and drain_deadline is None:
                drain_deadline = time.monotonic() + self.drain_timeout_s
            if not self.spool:
                if self.sampling_done:
                    return
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), 0.5)
                continue
            with self._lock:
                msg = self._inflight = self.spool[0]
            try:
                await publisher.send(topic, msg.to_bytes(), key=self.host.encode())
            except (KafkaError, OSError) as e:
                self._inflight = None
                health.set(False, f"broker unreachable: {e}")
                if drain_deadline is not None and time.monotonic() > drain_deadline:
                    log.error("stopping with %d samples unsent (broker unreachable)",
                              self.spool_samples)
                    return
                await asyncio.sleep(0.5)
                continue
            with self._lock:
                self._inflight = None
                self.spool.popleft()  # still msg: the sampler never drops the batch in flight
                self.spool_samples -= len(msg.samples)
                self.metrics.spool.set(self.spool_samples)
            self.metrics.published.inc(len(msg.samples))
            health.set(True, "publishing")


async def open_streams(
    cfg: CollectorConfig, *, nvml: object | None = None,
) -> tuple[PolledSource | None, MqttPlug | None, list[str]]:
    """Open the sources ``cfg.source`` asks for (see docs/power.md): the polled component
    source, the plug, and one line per decision.  An explicitly requested source that is
    not available raises ``SourceUnavailable``."""
    names = cfg.source_names
    auto = not names
    polled_names = [n for n in names if n != "mqtt"]
    comp: PolledSource | None = None
    why: list[str] = []
    if auto or polled_names:
        comp, why = open_component_sources(polled_names, cfg.powercap_root,
                                           cfg.estimate_idle_w, cfg.estimate_max_w, nvml)
    plug: MqttPlug | None = None
    if "mqtt" in names or (auto and cfg.mqtt_host):
        try:
            plug = MqttPlug(cfg)
            await plug.check()
            why.append(f"mqtt plug {plug.zone} on {cfg.mqtt_host}:{cfg.mqtt_port} "
                       f"({'requested' if not auto else 'auto: configured and reachable'})")
        except SourceUnavailable as e:
            if not auto:
                if comp is not None:
                    comp.close()
                raise
            plug = None
            why.append(f"no mqtt plug (auto: {e})")
    return comp, plug, why


async def run_collector(
    cfg: CollectorConfig, kafka: KafkaSettings, registry: CollectorRegistry, health: Health,
    stop: StopSignal, host: str, *, nvml: object | None = None,
) -> list[Collector]:
    """Run the collector until ``stop``; returns its streams (for inspection)."""
    comp, plug, why = await open_streams(cfg, nvml=nvml)
    for w in why:
        log.info("power source: %s", w)
    metrics = CollectorMetrics(registry)
    used = [s for s in (comp.name if comp else None, "mqtt_plug" if plug else None) if s]
    metrics.info.info({"source": ",".join(used), "reason": "; ".join(why), "host": host})
    publisher = Publisher(kafka)
    topic = kafka.topic(TOPIC)
    collectors: list[Collector] = []
    tasks: list[asyncio.Task[Any]] = []
    plug_task: asyncio.Task[None] | None = None
    if comp is not None:
        c = Collector(comp, host, cfg.interval_s, cfg.batch_max_samples, cfg.batch_max_age_s,
                      cfg.spool_max_samples, metrics)
        collectors.append(c)
        tasks += [asyncio.ensure_future(c.sample_loop(stop)),
                  asyncio.ensure_future(c.publish_loop(publisher, health, topic))]
    if plug is not None:
        # a plug reports every few seconds at most: each report is sent at once
        pc = Collector(None, host, cfg.interval_s, 1, 0.0, cfg.spool_max_samples, metrics,
                       zones=plug.zones())
        collectors.append(pc)

        def bad(reason: str) -> None:
            metrics.read_errors.inc()
            log.warning("mqtt plug: skipped message: %s", reason)

        plug_task = asyncio.ensure_future(plug.run(pc.record, bad))
        tasks.append(asyncio.ensure_future(pc.publish_loop(publisher, health, topic)))
    health.set(True, "sampling (" + "; ".join(why) + ")")
    try:
        if plug_task is not None:
            await stop.event.wait()
            plug_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plug_task
            collectors[-1].finish()
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        if plug_task is not None:
            plug_task.cancel()
        await publisher.close()
        if comp is not None:
            comp.close()
    return collectors


__all__ = ["Collector", "Publisher", "SourceUnavailable", "open_streams", "run_collector"]
