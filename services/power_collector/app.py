"""Power collector loop: sample on absolute deadlines, batch, publish to ``power.samples``.

Sampling and publishing are decoupled: the sampler never waits for the broker.  Batches go
through a bounded spool; when the broker is unreachable they wait there (in order) and what
exceeds the bound is counted in ``joulestream_power_collector_dropped_samples_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from schemas.power_samples import TOPIC, PowerSamples, Sample
from shared.httpserver import Health
from shared.kafka import StopSignal, make_producer, with_retry
from shared.settings import KafkaSettings

from .config import CollectorConfig
from .logic import Batcher
from .metrics import CollectorMetrics
from .sources import EstimateSource, RaplSource, open_source

log = logging.getLogger("power_collector")


class Collector:
    """Samples one source; ``batches`` holds PowerSamples waiting to be published."""

    def __init__(
        self,
        source: RaplSource | EstimateSource,
        host: str,
        interval_s: float,
        batch_max: int,
        batch_age_s: float,
        spool_max_samples: int,
        metrics: CollectorMetrics,
    ) -> None:
        self.source = source
        self.host = host
        self.run_id = uuid.uuid4().hex[:16]
        self.interval_ns = int(interval_s * 1e9)
        self.zones = source.zones()
        self.batcher = Batcher(batch_max, int(batch_age_s * 1e9))
        self.spool: deque[PowerSamples] = deque()
        self.spool_samples = 0
        self.spool_max = spool_max_samples
        self.seq = 0
        self.metrics = metrics
        self.wakeup = asyncio.Event()
        self.sampling_done = False
        for z in self.zones:
            metrics.power.labels(host, z.name, z.source, z.basis)
            metrics.energy.labels(host, z.name, z.source, z.basis)

    def sample_once(self, mono_ns: int) -> Sample:
        r = self.source.read(mono_ns)
        s = Sample(
            seq=self.seq, ts_ns=time.time_ns(), mono_ns=mono_ns, energy_j=r.energy_j,
            power_w=r.power_w, wrap_ambiguous=r.wrap_ambiguous,
        )
        self.seq += 1
        for z in self.zones:
            if z.name in r.power_w:
                self.metrics.power.labels(self.host, z.name, z.source, z.basis).set(
                    r.power_w[z.name])
            if z.name in r.energy_j:
                self.metrics.energy.labels(self.host, z.name, z.source, z.basis).set(
                    r.energy_j[z.name])
        return s

    def flush_batch(self) -> None:
        samples = self.batcher.take()
        if not samples:
            return
        msg = PowerSamples(host=self.host, run_id=self.run_id, zones=self.zones,
                           samples=samples)  # type: ignore[arg-type]
        self.spool.append(msg)
        self.spool_samples += len(samples)
        # bounded spool: drop the oldest batches beyond the bound, counted, never silent
        while self.spool_samples > self.spool_max and len(self.spool) > 1:
            old = self.spool.popleft()
            self.spool_samples -= len(old.samples)
            self.metrics.dropped.inc(len(old.samples))
            log.error("spool full: dropped %d samples (broker unreachable?)", len(old.samples))
        self.metrics.spool.set(self.spool_samples)
        self.wakeup.set()

    async def sample_loop(self, stop: StopSignal) -> None:
        """Sample on absolute deadlines: drift-free, late ticks are counted, not bunched."""
        next_ns = time.monotonic_ns()
        while not stop.is_set():
            now = time.monotonic_ns()
            self.metrics.lag.set(max(0, now - next_ns) / 1e9)
            try:
                sample = self.sample_once(now)
            except (OSError, ValueError) as e:  # a transient read failure skips one sample
                self.metrics.read_errors.inc()
                log.warning("sample failed: %s", e)
            else:
                self.batcher.add(sample, now)
            if self.batcher.due(now):
                self.flush_batch()
            next_ns += self.interval_ns
            now = time.monotonic_ns()
            if next_ns < now:  # overran: skip missed deadlines
                missed = (now - next_ns) // self.interval_ns + 1
                self.metrics.missed.inc(missed)
                next_ns += missed * self.interval_ns
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.event.wait(), (next_ns - now) / 1e9)
        self.flush_batch()
        self.sampling_done = True
        self.wakeup.set()

    async def publish_loop(self, producer: AIOKafkaProducer, stop: StopSignal,
                           health: Health, topic: str = TOPIC) -> None:
        while True:
            if not self.spool:
                if self.sampling_done:
                    return
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), 0.5)
                continue
            msg = self.spool[0]
            try:
                await producer.send_and_wait(topic, msg.to_bytes(), key=self.host.encode())
            except (KafkaError, OSError) as e:
                health.set(False, f"broker unreachable: {e}")
                if self.sampling_done:
                    log.error("stopping with %d samples unsent", self.spool_samples)
                    return
                await asyncio.sleep(0.5)
                continue
            self.spool.popleft()
            self.spool_samples -= len(msg.samples)
            self.metrics.spool.set(self.spool_samples)
            self.metrics.published.inc(len(msg.samples))
            health.set(True, "publishing")


async def run_collector(
    cfg: CollectorConfig, kafka: KafkaSettings, registry: CollectorRegistry, health: Health,
    stop: StopSignal, host: str,
) -> Collector:
    source, why = open_source(cfg.source, cfg.powercap_root, cfg.estimate_idle_w,
                              cfg.estimate_max_w)
    log.info("power source: %s", why)
    metrics = CollectorMetrics(registry)
    metrics.info.info({"source": source.name, "reason": why, "host": host})
    col = Collector(source, host, cfg.interval_s, cfg.batch_max_samples, cfg.batch_max_age_s,
                    cfg.spool_max_samples, metrics)
    producer = make_producer(kafka)
    if not await with_retry("producer start", producer.start, stop, health):
        return col
    health.set(True, f"sampling ({why})")
    try:
        await asyncio.gather(col.sample_loop(stop), col.publish_loop(producer, stop, health,
                                                                   kafka.topic(TOPIC)))
    finally:
        await producer.stop()
    return col
