"""The Apache Kafka path: the same producer/consumer/worker code against a real Apache Kafka
broker started by testcontainers.  Skipped where no Docker engine runs (as on the
development machines here); run the whole suite against Kafka with
``JOULESTREAM_TEST_KAFKA=apache ./scripts/test``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from schemas import cost_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from services.cost_worker.app import CostProcessor
from shared.httpserver import Health
from shared.kafka import StopSignal, ensure_topics, make_consumer, make_producer, run_worker
from shared.settings import KafkaSettings
from tests.conftest import docker_available

pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(not docker_available(), reason="no Docker engine here")]


@pytest.fixture(scope="module")
def apache_kafka() -> Iterator[str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.kafka import KafkaContainer
    with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


async def test_cost_worker_round_trip_on_apache_kafka(apache_kafka: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=apache_kafka, topic_prefix="ak.", partitions=2,
                          request_timeout_ms=20_000)
    await ensure_topics(kafka)
    stop = StopSignal()
    task = asyncio.create_task(run_worker(CostProcessor(CollectorRegistry()), kafka, "ak-cost",
                                          CollectorRegistry(), Health(), stop))
    now = time.time_ns()
    e = ScenarioEnergy(
        scenario_id="ak1", host="h", settings=EncodeSettings(codec="libx264", duration_s=2),
        start_ns=now - 3 * 10**9, end_ns=now - 10**9, wall_s=2.0, energy_j=20.0,
        zones_j={"package-0": 20.0}, basis="measured", sources=["rapl"], scope="component",
        mean_power_w=10.0, coverage=1.0, max_gap_s=0.1, complete=True, n_samples=20,
        emitted_by="watermark")
    p = make_producer(kafka)
    await p.start()
    await p.send_and_wait(kafka.topic(scenario_energy.TOPIC), e.to_bytes(), key=b"ak1")
    await p.stop()
    c = make_consumer(kafka, None)
    await c.start()
    try:
        parts = [TopicPartition(kafka.topic(cost_results.TOPIC), i) for i in range(2)]
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        got: list[CostResult] = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500)).values():
                got += [CostResult.from_bytes(r.value) for r in recs]
    finally:
        await c.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
    assert got and got[0].scenario_id == "ak1" and got[0].energy_j == pytest.approx(20.0)
