"""The broker unreachable at start and during a run, with a worker as a real process.

A broker of this test's own on a fixed port (the session broker is not touched).  The
worker (the cost worker) starts before the broker exists: it waits with capped backoff and
reports 503 on /healthz; once the broker is up it turns ready and processes input.  Then
the broker is stopped: the worker stays up, /healthz goes 503 (and ``..._up`` 0) within
seconds; the broker comes back and the worker reconnects, rejoins its group, reports 200
and processes new input.

The embedded broker keeps everything in memory, so a restart loses the topics and the
committed offsets: the test recreates the topics (as a persistent Kafka would still have
them) and checks the worker processes what is published *after* the outage.  Samples a
power collector produces during an outage are spooled and delivered afterwards; that is
tests/test_power_collector_delivery.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from test_faults_support import Worker, cost_worker, read_topic
from test_graceful_stop import energy_record

from schemas import cost_results, scenario_energy
from schemas.cost_results import CostResult
from shared.broker import EmbeddedBroker, free_port
from shared.kafka import ensure_topics, make_producer
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration


async def send_energy(kafka: KafkaSettings, i: int) -> str:
    r = energy_record(i, time.time_ns())
    p = make_producer(kafka)
    await p.start()
    try:
        await p.send_and_wait(kafka.topic(scenario_energy.TOPIC), r.to_bytes(),
                              key=r.scenario_id.encode())
    finally:
        await p.stop()
    return r.scenario_id


async def costed(kafka: KafkaSettings, sid: str) -> CostResult:
    got = await read_topic(kafka, cost_results.TOPIC, CostResult.from_bytes,
                           lambda o: sid in o, 90)
    assert sid in got, f"no cost.results record for {sid}"
    return got[sid][0]


async def stays_up(w: Worker, seconds: float, status: int) -> None:
    """The process stays alive and /healthz keeps answering ``status`` for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        code, body = w.health()
        assert w.alive(), f"{w.name} exited: {w.log_path}"
        assert code == status, (code, body)
        await asyncio.sleep(0.3)


async def test_worker_waits_for_the_broker_and_survives_an_outage(tmp_path: Path) -> None:
    port = free_port()
    broker = EmbeddedBroker(tmp_path / "broker.log", port=port)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=4,
                          topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    w = cost_worker(kafka, tmp_path)
    w.start()
    try:
        # 1. no broker at start: not ready, retrying, alive
        body = await w.wait_health(503, 60)
        assert "creating topics" in body["reason"], body
        await stays_up(w, 3.0, 503)
        log = w.log_path.read_text()
        delays = [float(x.split("retrying in ", 1)[1].rstrip("s"))
                  for x in log.splitlines() if "creating topics failed" in x]
        assert len(delays) >= 3 and delays == sorted(delays) and delays[-1] > delays[0]
        # 2. the broker appears: ready, and it works
        broker.start()
        await w.wait_health(200, 90)
        first = await costed(kafka, await send_energy(kafka, 1))
        assert first.energy_j > 0
        assert w.metric("joulestream_cost_worker_up") == 1
        # 3. outage during the run: not ready within seconds, still alive
        broker.stop()
        body = await w.wait_health(503, 30)
        assert "broker" in body["reason"], body
        assert w.metric("joulestream_cost_worker_up") == 0
        await stays_up(w, 3.0, 503)
        # 4. the broker is back (memory-only: topics recreated): ready again, processes
        broker.start()
        await ensure_topics(kafka)
        await w.wait_health(200, 90)
        second = await costed(kafka, await send_energy(kafka, 2))
        assert second.scenario_id != first.scenario_id and second.energy_j > 0
        assert w.metric("joulestream_cost_worker_up") == 1
    finally:
        code = w.term(30)
        broker.stop()
    assert code == 0
