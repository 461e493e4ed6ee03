"""energy_worker: consumes power.samples + scenario.events (co-partitioned by host, range
assignment) and produces scenario.energy.  Offsets are committed only up to what the join
no longer needs, so a restart rebuilds the same state by replay."""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from schemas import power_samples, scenario_energy, scenario_events
from schemas.power_samples import PowerSamples
from schemas.scenario_events import (
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
    parse_scenario_event,
)
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .logic import EnergyJoin, JoinConfig


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

    def __init__(self, registry: CollectorRegistry, cfg: JoinConfig | None = None) -> None:
        self.join = EnergyJoin(cfg)
        self.metrics = EnergyMetrics(registry)
        self.consumed: dict[TopicPartition, int] = {}

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        tp = TopicPartition(record.topic, record.partition)
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
            self.join.add_failed(ev.scenario_id, ev.host)
        return []

    def tick(self, now_ns: int) -> list[Output]:
        out = []
        for res in self.join.ready(now_ns):
            res = res.model_copy(update={"computed_at_ns": None})
            out.append(Output(scenario_energy.TOPIC, res.scenario_id.encode(), res.to_bytes()))
            self.metrics.emitted.labels(res.emitted_by, res.basis).inc()
            self.metrics.latency.observe(max(0.0, (time.time_ns() - res.end_ns) / 1e9))
            self.metrics.energy.labels(res.settings.codec).observe(res.energy_j)
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
        self.join.drop_partitions({tp.partition for tp in partitions})
        for tp in partitions:
            self.consumed.pop(tp, None)
