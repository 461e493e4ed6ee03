"""energy_worker: consumes power.samples + scenario.events (co-partitioned by host, range
assignment) and produces scenario.energy.  Offsets are committed only up to what the join
no longer needs, so a restart rebuilds the same state by replay.

Idle baselines are the one piece of state a replay cannot rebuild (their windows are long
committed past), so the worker writes them to the compacted, co-partitioned
``host.baselines`` topic and, the first time it sees a record of a partition, reads that
partition of ``host.baselines`` back to its end before processing anything of it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from schemas import host_baselines, power_samples, scenario_energy, scenario_events
from schemas.host_baselines import HostBaselines
from schemas.power_samples import PowerSamples
from schemas.scenario_events import (
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
    parse_scenario_event,
)
from shared.kafka import BadInput, Output, make_consumer
from shared.settings import KafkaSettings
from shared.validation import describe_validation_error

from .logic import EnergyJoin, JoinConfig

log = logging.getLogger(__name__)


async def ensure_baselines_topic(kafka: KafkaSettings) -> None:
    """Create ``host.baselines`` compacted (same partition count as the data topics), if it
    does not exist yet.  Call before ``ensure_topics`` (which would create it uncompacted)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        name = kafka.topic(host_baselines.TOPIC)
        if name not in set(await admin.list_topics()):
            with contextlib.suppress(KafkaError):
                await admin.create_topics([NewTopic(
                    name, kafka.partitions, kafka.replication_factor,
                    topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


async def read_baselines(kafka: KafkaSettings, partitions: set[int],
                         timeout_s: float = 30.0) -> list[tuple[int, HostBaselines]]:
    """Every record of the given ``host.baselines`` partitions, from the start to the end.

    Undecodable records are skipped with a warning (only this worker writes the topic)."""
    topic = kafka.topic(host_baselines.TOPIC)
    c = make_consumer(kafka, None)
    await c.start()
    out: list[tuple[int, HostBaselines]] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        todo = set(tps)
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} {sorted(p.partition for p in todo)}")
            batch = await c.getmany(*todo, timeout_ms=200)
            for tp, recs in batch.items():
                for r in recs:
                    try:
                        out.append((tp.partition, HostBaselines.from_bytes(r.value or b"")))
                    except ValidationError as e:
                        log.warning("skipping bad host.baselines record @%d: %s", r.offset, e)
            for tp in list(todo):
                hw = c.highwater(tp)
                if hw is not None and await c.position(tp) >= hw:
                    todo.discard(tp)
    finally:
        await c.stop()
    return out


class EnergyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "joulestream_energy_worker"
        self.emitted = Counter(f"{p}_scenarios_total", "Scenario energy records emitted",
                               ["emitted_by", "basis"], registry=registry)
        for by in ("watermark", "timeout"):
            for b in ("measured", "estimated"):
                self.emitted.labels(by, b)
        self.pending = Gauge(f"{p}_pending_scenarios", "Finished scenarios waiting for samples",
                             registry=registry)
        self.samples = Counter(f"{p}_samples_total", "Power samples joined", registry=registry)
        self.latency = Histogram(f"{p}_emit_latency_seconds",
                                 "Wall time from a scenario's end to its energy record",
                                 buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120),
                                 registry=registry)
        self.energy = Histogram(f"{p}_scenario_energy_joules", "Energy per scenario",
                                ["codec"], buckets=(1, 10, 50, 100, 500, 1e3, 5e3, 1e4, 1e5, 1e6),
                                registry=registry)


class EnergyProcessor:
    name = "energy_worker"
    input_topics: Sequence[str] = (power_samples.TOPIC, scenario_events.TOPIC)

    def __init__(self, registry: CollectorRegistry, cfg: JoinConfig | None = None,
                 kafka: KafkaSettings | None = None) -> None:
        """``kafka``: where to read ``host.baselines`` back from; None keeps baselines in
        memory only (they are still produced, but lost on restart)."""
        self.join = EnergyJoin(cfg)
        self.metrics = EnergyMetrics(registry)
        self.consumed: dict[TopicPartition, int] = {}
        self.kafka = kafka
        self._loaded: set[int] = set()

    async def _load_baselines(self, partition: int) -> None:
        if self.kafka is None or partition in self._loaded:
            return
        for p, rec in await read_baselines(self.kafka, {partition}):
            self.join.add_baselines(rec, p)
        self._loaded.add(partition)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        tp = TopicPartition(record.topic, record.partition)
        await self._load_baselines(record.partition)
        self.consumed[tp] = record.offset + 1
        raw = record.value or b""
        try:
            if record.topic == power_samples.TOPIC:
                msg = PowerSamples.from_bytes(raw)
                self.join.add_samples(msg, record.partition, record.offset)
                self.metrics.samples.inc(len(msg.samples))
                return []
            ev = parse_scenario_event(raw)
        except ValidationError as e:
            raise BadInput(describe_validation_error(e), "schema") from e
        except (UnicodeDecodeError, ValueError) as e:
            raise BadInput(f"undecodable message: {e}", "decode") from e
        if isinstance(ev, ScenarioStarted):
            self.join.add_started(ev, record.partition, record.offset)
        elif isinstance(ev, ScenarioFinished):
            self.join.add_finished(ev, record.partition, record.offset)
        elif isinstance(ev, ScenarioFailed):
            self.join.add_failed(ev, partition=record.partition, offset=record.offset)
        return []

    def on_lag(self, lag: dict[TopicPartition, int]) -> None:
        """Unread messages per input partition (from the run loop, before each tick)."""
        self.join.set_events_lag({tp.partition: n for tp, n in lag.items()
                                  if tp.topic == scenario_events.TOPIC})

    def tick(self, now_ns: int) -> list[Output]:
        out = []
        for res in self.join.ready(now_ns):
            res = res.model_copy(update={"computed_at_ns": None})
            out.append(Output(scenario_energy.TOPIC, res.scenario_id.encode(), res.to_bytes()))
            self.metrics.emitted.labels(res.emitted_by, res.basis).inc()
            self.metrics.latency.observe(max(0.0, (time.time_ns() - res.end_ns) / 1e9))
            self.metrics.energy.labels(res.settings.codec).observe(res.energy_j)
        for rec in self.join.take_baseline_updates():
            out.append(Output(host_baselines.TOPIC, rec.host.encode(), rec.to_bytes()))
        self.metrics.pending.set(len(self.join.pending))
        return out

    def safe_offsets(self) -> dict[TopicPartition, int]:
        samples, events = self.join.min_offsets()
        safe = dict(self.consumed)
        for tp in safe:
            need = (samples if tp.topic == power_samples.TOPIC else events).get(tp.partition)
            if need is not None:
                safe[tp] = min(safe[tp], need)
        return safe

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in partitions}
        self.join.drop_partitions(parts)
        self._loaded -= parts
        for tp in partitions:
            self.consumed.pop(tp, None)
