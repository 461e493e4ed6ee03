"""Scale-out through the embedded broker: two energy_worker instances in one consumer group
give the same scenario.energy records as one instance, with idle baselines and concurrent
scenarios, hosts spread over all 4 partitions (and baselines carried across a rebalance by
host.baselines)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from schemas import power_samples, scenario_energy, scenario_events
from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings, ScenarioFinished, ScenarioStarted
from services.energy_worker.app import EnergyProcessor, ensure_baselines_topic
from services.energy_worker.logic import JoinConfig
from shared.httpserver import Health
from shared.kafka import StopSignal, ensure_topics, make_producer, run_worker
from shared.settings import KafkaSettings
from tests.kafka_helpers import read_records

pytestmark = pytest.mark.integration

S = 10**9
HOSTS = [f"host-{i}" for i in range(8)]
PKG = Zone(name="package-0", kind="package", source="rapl", basis="measured", scope="component")
DT = 0.1


def watts(t: float, k: int) -> float:
    """Idle 10 W; A and B load the host 8..45 s; C 48..62 s (host-dependent levels)."""
    return 10.0 + (20.0 + k) * (8 <= t < 45) + (15.0 + k) * (48 <= t < 62)


def host_inputs(host: str, k: int, t0: int) -> tuple[list[bytes], list[bytes]]:
    """(scenario events in publication order, power batches) of one host."""
    ns = [round(i * DT * S) for i in range(int(100 / DT) + 1)]
    cum, energy = 0.0, []
    for i in range(len(ns)):
        if i:
            cum += watts((i - 1) * DT, k) * DT
        energy.append(cum)
    batches = []
    for a in range(0, len(ns), 50):
        smp = [Sample(seq=i, ts_ns=t0 + ns[i], mono_ns=ns[i], energy_j={"package-0": energy[i]})
               for i in range(a, min(a + 50, len(ns)))]
        batches.append(PowerSamples(host=host, run_id=f"{host}-run", zones=[PKG],
                                    samples=smp).to_bytes())

    def settings(codec: str) -> EncodeSettings:
        return EncodeSettings(codec=codec, duration_s=1)

    def st(sid: str, a: float, codec: str = "libx264") -> bytes:
        return ScenarioStarted(event_id=f"{sid}:started", scenario_id=sid, host=host,
                               settings=settings(codec), start_ns=t0 + round(a * S)).to_bytes()

    def fin(sid: str, a: float, b: float, cpu: float, codec: str = "libx264") -> bytes:
        return ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=host,
                                settings=settings(codec), start_ns=t0 + round(a * S),
                                end_ns=t0 + round(b * S), frames=10, cpu_s=cpu).to_bytes()

    # chronological: idle 0-5, A 10-30 (1 CPU), B 20-40 (2 CPUs), C 50-60
    events = [st(f"{host}-idle", 0, "idle"), fin(f"{host}-idle", 0, 5, 0, "idle"),
              st(f"{host}-A", 10), st(f"{host}-B", 20), fin(f"{host}-A", 10, 30, 20),
              fin(f"{host}-B", 20, 40, 40), st(f"{host}-C", 50), fin(f"{host}-C", 50, 60, 9)]
    return events, batches


async def publish_all(kafka: KafkaSettings, t0: int) -> None:
    p = make_producer(kafka)
    await p.start()
    try:
        for k, h in enumerate(HOSTS):
            events, batches = host_inputs(h, k, t0)
            for ev in events:
                await p.send(kafka.topic(scenario_events.TOPIC), ev, key=h.encode())
            for b in batches:
                await p.send(kafka.topic(power_samples.TOPIC), b, key=h.encode())
        await p.flush()
    finally:
        await p.stop()


async def read_energy(kafka: KafkaSettings, want: int, timeout_s: float
                      ) -> dict[str, list[ScenarioEnergy]]:
    topic = scenario_energy.TOPIC
    found = await read_records(kafka, [topic], lambda f: len({r.key for r in f[topic]}) >= want,
                               timeout_s, poll_ms=300)
    out: dict[str, list[ScenarioEnergy]] = {}
    for r in found[topic]:
        e = ScenarioEnergy.from_bytes(r.value or b"")
        assert r.key == e.scenario_id.encode()
        out.setdefault(e.scenario_id, []).append(e)
    return out


async def test_two_instances_in_one_group_equal_one(kafka: KafkaSettings) -> None:
    parts = {DefaultPartitioner()(h.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for h in HOSTS}
    assert parts == {0, 1, 2, 3}  # the hosts really are spread over every partition
    one = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, partitions=4,
                        topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    for k in (kafka, one):
        await ensure_baselines_topic(k)
        await ensure_topics(k)
    cfg = JoinConfig(timeout_s=3600)
    stop = StopSignal()
    procs = {"single": EnergyProcessor(CollectorRegistry(), cfg, one),
             "m1": EnergyProcessor(CollectorRegistry(), cfg, kafka),
             "m2": EnergyProcessor(CollectorRegistry(), cfg, kafka)}
    settings_of = {"single": one, "m1": kafka, "m2": kafka}
    group = {"single": "g-single", "m1": "g-pair", "m2": "g-pair"}
    tasks: dict[str, Any] = {}

    def start(name: str) -> None:
        tasks[name] = asyncio.create_task(run_worker(
            procs[name], settings_of[name], group[name], CollectorRegistry(), Health(), stop))

    try:
        start("single")
        start("m1")
        t0 = time.time_ns() - 200 * S
        await publish_all(one, t0)
        await publish_all(kafka, t0)
        await asyncio.sleep(1.0)
        start("m2")  # joins later: a rebalance moves partitions (and their baselines) to it
        want = len(HOSTS) * 4
        ref = await read_energy(one, want, 90)
        # wait until the pair has emitted everything, and m2 has taken over partitions
        pair = await read_energy(kafka, want, 90)
        deadline = time.monotonic() + 60
        while not (procs["m1"].consumed and procs["m2"].consumed):
            assert time.monotonic() < deadline, "m2 never got partitions"
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        pair = await read_energy(kafka, want, 30)
    finally:
        stop.set()
        for t in tasks.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 30)
    for name, t in tasks.items():
        assert t.done() and t.exception() is None, f"{name}: {t.exception()!r}"

    assert set(ref) == set(pair) and len(ref) == want
    for sid, recs in pair.items():
        # a replay after the rebalance may re-emit a record: always the identical one
        assert all(r == recs[0] for r in recs), sid
        assert all(r == ref[sid][0] for r in ref[sid])
        assert recs[0] == ref[sid][0], sid
    for k, h in enumerate(HOSTS):
        a, b, c = (ref[f"{h}-{x}"][0] for x in "ABC")
        assert a.idle_power_w == pytest.approx(10.0) and a.idle_baseline_id == f"{h}-idle"
        assert a.concurrent_scenarios == 1 and c.concurrent_scenarios == 0
        # A and B share [8, 45] s of load... within their windows [10, 40]: 30 s above idle
        dyn = (20.0 + k) * 30
        assert (a.attributed_dynamic_energy_j or 0) + (b.attributed_dynamic_energy_j or 0) \
            == pytest.approx(dyn, rel=1e-6)
        # [20, 30] is shared 1:2 (CPU rates 1 and 2), the rest is exclusive
        assert a.attributed_dynamic_energy_j == pytest.approx((20.0 + k) * (10 + 10 / 3),
                                                              rel=1e-6)
        assert c.dynamic_energy_j == pytest.approx((15.0 + k) * 10, rel=1e-6)


async def test_idle_baseline_survives_a_worker_restart(kafka: KafkaSettings) -> None:
    """The idle window is committed past before the restart; the baseline comes back from
    host.baselines, so dynamic energy is still computed (and equal to an unbroken run's)."""
    await ensure_baselines_topic(kafka)
    h = HOSTS[0]
    t0 = time.time_ns() - 200 * S
    events, batches = host_inputs(h, 0, t0)
    p = make_producer(kafka)
    await p.start()
    try:
        async def send(evs: list[bytes], bs: list[bytes]) -> None:
            for ev in evs:
                await p.send(kafka.topic(scenario_events.TOPIC), ev, key=h.encode())
            for b in bs:
                await p.send(kafka.topic(power_samples.TOPIC), b, key=h.encode())
            await p.flush()

        cfg = JoinConfig(timeout_s=3600, grace_s=5)
        await send(events[:2], batches[:4])  # idle window and samples up to 20 s
        stop1 = StopSignal()
        w1 = EnergyProcessor(CollectorRegistry(), cfg, kafka)
        # a short session: the embedded broker waits it out for a member that left
        fast = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
        t1 = asyncio.create_task(run_worker(w1, kafka, "g-restart", CollectorRegistry(),
                                            Health(), stop1, consumer_overrides=fast))
        first = await read_energy(kafka, 1, 60)
        assert first[f"{h}-idle"][0].mean_power_w == pytest.approx(10.0)
        await asyncio.sleep(1.0)  # a commit after the baseline record was acknowledged
        stop1.set()
        await asyncio.wait_for(t1, 30)
        await send(events[2:], batches[4:])
        stop2 = StopSignal()
        w2 = EnergyProcessor(CollectorRegistry(), cfg, kafka)
        t2 = asyncio.create_task(run_worker(w2, kafka, "g-restart", CollectorRegistry(),
                                            Health(), stop2, consumer_overrides=fast))
        try:
            got = await read_energy(kafka, 4, 60)
        finally:
            stop2.set()
            await asyncio.wait_for(t2, 30)
    finally:
        await p.stop()
    # the restarted worker never saw the idle window's events again
    assert not any(s == f"{h}-idle" for s in w2.join.pending)
    c = got[f"{h}-C"][-1]
    assert c.idle_baseline_id == f"{h}-idle" and c.idle_power_w == pytest.approx(10.0)
    assert c.dynamic_energy_j == pytest.approx(15.0 * 10, rel=1e-6)
    assert len(got[f"{h}-idle"]) == 1  # not recomputed: its events were committed past
