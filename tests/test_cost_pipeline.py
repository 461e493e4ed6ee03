"""The cost worker on the real (embedded) broker with the shared run loop: estimated energy
keeps its label through cost.results, bad input is dead-lettered while the worker goes on,
and quality results feed the efficiency metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client import CollectorRegistry

from schemas import cost_results, quality_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.dead_letters import DeadLetter, dlq_topic
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from services.cost_worker.app import CostProcessor
from services.cost_worker.config import PriceBook
from shared.httpserver import Health
from shared.kafka import StopSignal, make_producer, run_worker
from shared.settings import KafkaSettings
from tests.kafka_helpers import read_records, values

pytestmark = pytest.mark.integration

T0 = 1_790_000_000 * 10**9


def estimated(sid: str, energy_j: float) -> ScenarioEnergy:
    return ScenarioEnergy(
        scenario_id=sid, host="enc1", settings=EncodeSettings(
            codec="libx264", preset="veryfast", width=640, height=360, bitrate_kbps=400,
            duration_s=2, fps=25),
        start_ns=T0, end_ns=T0 + 2 * 10**9, wall_s=2.0, energy_j=energy_j,
        zones_j={"cpu": energy_j}, basis="estimated", sources=["estimate"], scope="component",
        mean_power_w=energy_j / 2, cpu_s=1.8, frames=50, output_bytes=100_000, coverage=1.0,
        max_gap_s=0.1, complete=True, n_samples=20, emitted_by="watermark")


async def read_all(kafka: KafkaSettings, topics: list[str], enough: int, timeout_s: float
                   ) -> dict[str, list[bytes]]:
    return values(await read_records(
        kafka, topics, lambda f: sum(map(len, f.values())) >= enough, timeout_s))


async def test_estimated_energy_flows_through_with_its_label(kafka: KafkaSettings) -> None:
    book = PriceBook(energy_price_per_kwh=0.2, compute_price_per_vcpu_hour=0.036,
                     carbon_g_per_kwh=400, currency="USD", audience_views=50)
    reg = CollectorRegistry()
    proc = CostProcessor(reg, book)
    stop = StopSignal()
    task = asyncio.create_task(run_worker(proc, kafka, "g-cost", reg, Health(), stop))
    producer = make_producer(kafka)
    await producer.start()
    try:
        etopic = kafka.topic(scenario_energy.TOPIC)
        await producer.send_and_wait(etopic, b'{"scenario_id": "broken"', key=b"broken")
        for sid, j in (("e1", 7200.0), ("e2", 3600.0)):
            await producer.send_and_wait(etopic, estimated(sid, j).to_bytes(), key=sid.encode())
        q = QualityResult(scenario_id="e1", host="enc1", vmaf=90.0, vmaf_model="vmaf_v0.6.1",
                          frames_scored=50, frames_reference=50, compute_s=1.0,
                          tool_version="test")
        await producer.send_and_wait(kafka.topic(quality_results.TOPIC), q.to_bytes(),
                                     key=b"e1")
        found = await read_all(kafka, [cost_results.TOPIC, dlq_topic(scenario_energy.TOPIC)],
                               3, 90)
        labels = {"codec": "libx264", "preset": "veryfast", "resolution": "360p",
                  "basis": "estimated"}
        # the quality record may come in a later batch than e1's energy: wait for the join
        deadline = time.monotonic() + 30
        while reg.get_sample_value("joulestream_cost_worker_vmaf_per_kilojoule_count",
                                   labels) != 1:
            assert time.monotonic() < deadline, "quality result never joined"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)

    costs = {c.scenario_id: c for c in map(CostResult.from_bytes, found[cost_results.TOPIC])}
    assert set(costs) == {"e1", "e2"}
    c = costs["e1"]
    assert c.energy_basis == "estimated" and c.energy_sources == ["estimate"]
    assert c.energy_scope == "component" and c.region == "default"
    # 7200 J = 2 Wh → 0.002 kWh × 0.2 = 0.0004; 1.8 CPU-s × 0.036 / 3600 = 0.000018
    assert c.energy_cost == pytest.approx(0.0004)
    assert c.compute_cost == pytest.approx(0.000018)
    assert c.carbon_g == pytest.approx(0.8)
    assert c.output_bitrate_kbps == pytest.approx(400.0)  # 100 kB × 8 / 2 s
    assert c.cost_per_viewer_hour is not None
    dead = [DeadLetter.from_bytes(v) for v in found[dlq_topic(scenario_energy.TOPIC)]]
    assert len(dead) == 1 and dead[0].service == "cost_worker"
    assert "schema" in dead[0].reason.lower() or "json" in dead[0].reason.lower()

    assert reg.get_sample_value("joulestream_cost_worker_carbon_grams_total", labels) == \
        pytest.approx(0.8 + 0.4)
    assert reg.get_sample_value("joulestream_cost_worker_vmaf_per_kilojoule_sum", labels) == \
        pytest.approx(90 / 7.2)
    assert reg.get_sample_value(
        "joulestream_cost_worker_quality_weighted_pixels_per_joule_sum", labels) == \
        pytest.approx(640 * 360 * 50 * 0.9 / 7200)


async def test_tco_reads_measured_scenarios_from_kafka(kafka: KafkaSettings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cost_worker.cli import measurements_from_kafka

    producer = make_producer(kafka)
    await producer.start()
    try:
        for sid, j in (("k1", 100.0), ("k2", 300.0), ("k1", 100.0)):  # k1 replayed
            await producer.send_and_wait(kafka.topic(scenario_energy.TOPIC),
                                         estimated(sid, j).to_bytes(), key=sid.encode())
        idle = estimated("idle1", 5.0).model_copy(update={
            "settings": EncodeSettings(codec="idle", duration_s=2)})
        await producer.send_and_wait(kafka.topic(scenario_energy.TOPIC), idle.to_bytes(),
                                     key=b"idle1")
    finally:
        await producer.stop()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", kafka.topic_prefix)
    ms = await measurements_from_kafka(timeout_s=60)
    assert sorted((m.scenario_id, m.energy_j, m.basis) for m in ms) == [
        ("k1", 100.0, "estimated"), ("k2", 300.0, "estimated")]
