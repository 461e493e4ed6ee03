"""Faults through the embedded broker, with the workers as real processes.

* kill -9: the energy worker, the cost worker and the trainer are killed at random points
  (seeded) while >= 200 scenarios flow, and restarted; every scenario ends with exactly one
  record in each result store (the de-duplicated ``scenario.energy`` and ``cost.results``
  topics, the trainer's SQLite dataset) equal to the undisturbed expectation.
* scale-out: three energy workers in one group, one killed -9 mid-run; the others take its
  partitions; de-duplicated by key the results equal the expectation.

Duplicates on the topics are allowed (at-least-once) but must be identical records; their
number is printed (run with ``-s``) and must stay below the input size.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import time
import uuid
from pathlib import Path

import pytest
from test_faults_support import (
    Worker,
    Workload,
    cost_worker,
    energy_worker,
    make_workload,
    partition_of,
    publish,
    read_topic,
    read_trainer_store,
    trainer,
)
from test_hostile_input import FINISHED_BAD, GENERIC

from schemas import cost_results, power_samples, scenario_energy, scenario_events
from schemas.cost_results import CostResult
from schemas.dead_letters import DeadLetter, dlq_topic
from schemas.power_samples import PowerSamples
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import ScenarioFinished, ScenarioStarted
from services.energy_worker.logic import EnergyJoin, JoinConfig
from shared.kafka import make_producer
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration


def check_topic(name: str, got: dict[str, list[ScenarioEnergy]] | dict[str, list[CostResult]],
                want: dict[str, ScenarioEnergy] | dict[str, CostResult]) -> int:
    """Every key once or more, every copy equal to the expectation; returns #duplicates."""
    assert set(got) == set(want), (
        f"{name}: missing {sorted(set(want) - set(got))[:5]}, "
        f"unexpected {sorted(set(got) - set(want))[:5]}")
    for sid, recs in got.items():
        for r in recs:
            assert r == want[sid], f"{name} {sid}: {r} != {want[sid]}"
    return sum(len(v) - 1 for v in got.values())


async def wait_results(kafka: KafkaSettings, wl: Workload, timeout_s: float
                       ) -> tuple[dict[str, list[ScenarioEnergy]], dict[str, list[CostResult]]]:
    hosts = frozenset(p.host for p in wl.plans)  # the key of the hostile burst's messages
    energy = await read_topic(kafka, scenario_energy.TOPIC, ScenarioEnergy.from_bytes,
                              lambda o: len(o) >= len(wl.energy), timeout_s, hosts)
    cost = await read_topic(kafka, cost_results.TOPIC, CostResult.from_bytes,
                            lambda o: len(o) >= len(wl.cost), timeout_s)
    return energy, cost


#: services that consume (and so dead-letter) each topic the burst goes to
DLQ_CONSUMERS = {power_samples.TOPIC: {"energy_worker"}, scenario_events.TOPIC: {"energy_worker"},
                 scenario_energy.TOPIC: {"cost_worker", "trainer"}}


async def publish_bad(kafka: KafkaSettings, hosts: list[str]) -> list[tuple[str, int, int, str]]:
    """A burst of hostile messages (test_hostile_input's cases) between the valid ones:
    returns (topic, partition, offset, case) of each."""
    cases = [(t, c, v) for t in DLQ_CONSUMERS for c, v in GENERIC if c != "huge string"]
    cases += [(scenario_events.TOPIC, c, json.dumps(d).encode()) for c, d in FINISHED_BAD]
    p = make_producer(kafka)
    await p.start()
    try:
        futs = [(t, c, await p.send(kafka.topic(t), v, key=hosts[i % len(hosts)].encode()))
                for i, (t, c, v) in enumerate(cases)]
        return [(t, (md := await f).partition, md.offset, c) for t, c, f in futs]
    finally:
        await p.stop()


async def check_dead_letters(kafka: KafkaSettings, bad: list[tuple[str, int, int, str]]
                             ) -> int:
    """Every bad message has a dead letter with a reason from each service consuming its
    topic (replays after a kill may add identical copies); returns the number of copies."""
    want = {(t, p, o, svc) for t, p, o, _ in bad for svc in DLQ_CONSUMERS[t]}
    seen: dict[tuple[str, int, int, str], str] = {}
    n = 0
    for topic in DLQ_CONSUMERS:
        got = await read_topic(kafka, dlq_topic(topic), DeadLetter.from_bytes,
                               lambda o: sum(map(len, o.values())) > 0, 30)
        for dls in got.values():
            for d in dls:
                n += 1
                assert d.source_topic == topic and d.reason.strip()
                seen[(d.source_topic, d.partition, d.offset, d.service)] = d.reason
    missing = sorted(want - set(seen))
    assert not missing, f"{len(missing)} bad messages without a dead letter: {missing[:5]}"
    assert set(seen) == want  # nothing valid was dead-lettered
    return n


async def chaos(workers: list[Worker], rng: random.Random, kills_each: int,
                gap_s: tuple[float, float], log: list[str]) -> None:
    """Kill -9 workers in a seeded random order at random moments; restart each at once
    (after a random pause), so some die mid-batch, some while joining the group."""
    order = [w for w in workers for _ in range(kills_each)]
    rng.shuffle(order)
    for w in order:
        await asyncio.sleep(rng.uniform(*gap_s))
        w.kill9()
        log.append(w.name)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        w.start()


@pytest.mark.parametrize("grace_s", [
    120.0,
    # a grace far shorter than the data span: offsets move past pruned samples and a
    # restart's backlog can put power.samples far ahead of scenario.events.  Still loses
    # the samples of a scenario after a restart (coverage 0.5) despite the lag-aware
    # pruning: a timing-dependent race, so not strict (docs/reliability.md)
    pytest.param(5.0, marks=pytest.mark.xfail(
        strict=False, reason="lag-aware pruning still races a restart's backlog")),
])
async def test_kill9_each_worker_at_random_points(kafka: KafkaSettings, tmp_path: Path,
                                                  grace_s: float) -> None:
    seed = 20_240_9
    wl = make_workload(hosts=8, per_host=26, seed=seed, grace_s=grace_s)
    assert len(wl.energy) >= 200 and len(wl.cost) >= 200
    assert {partition_of(p.host) for p in wl.plans} == {0, 1, 2, 3}
    data = tmp_path / "trainer"
    workers = [energy_worker(kafka, tmp_path, f"g-energy-{uuid.uuid4().hex[:6]}",
                             grace_s=grace_s),
               cost_worker(kafka, tmp_path), trainer(kafka, tmp_path, data)]
    kills: list[str] = []
    try:
        for w in workers:
            w.start()
        for w in workers:
            await w.wait_health(200, 90)
        rng = random.Random(seed)
        # the run: the timeline is published in 12 waves while the workers are killed
        waves = 12
        step = wl.span_s / waves + 1e-9
        storm = asyncio.create_task(chaos(workers, rng, 2, (1.5, 4.0), kills))
        bad: list[tuple[str, int, int, str]] = []
        for i in range(waves + 1):
            await publish(kafka, wl, i * step, (i + 1) * step if i < waves else 1e9)
            if i == waves // 2:
                bad = await publish_bad(kafka, [p.host for p in wl.plans])
            await asyncio.sleep(rng.uniform(0.5, 2.0))
        await storm
        assert sorted(kills) == sorted([w.name for w in workers] * 2)
        energy, cost = await wait_results(kafka, wl, 150)
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # the trainer consumes both topics too; it may still be catching up
            store = read_trainer_store(data)
            done = (sum(1 for e, _ in store.values() if e) >= len(wl.energy)
                    and sum(1 for _, c in store.values() if c) >= len(wl.cost))
            if done or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        dead = await check_dead_letters(kafka, bad)
        for w in workers:
            assert w.alive(), f"{w.name} exited: {w.log_path}"
    finally:
        codes = {w.name: w.term() for w in workers}
    assert codes == {w.name: 0 for w in workers}, codes  # a clean stop after all that
    dup_e = check_topic("scenario.energy", energy, wl.energy)
    dup_c = check_topic("cost.results", cost, wl.cost)
    # the trainer's dataset: one row per scenario, energy and cost parts as expected
    assert set(store) == set(wl.energy)
    for sid, (e_json, c_json) in store.items():
        assert e_json is not None and ScenarioEnergy.model_validate_json(e_json) == wl.energy[sid]
        if sid in wl.cost:
            assert c_json is not None
            assert CostResult.model_validate_json(c_json) == wl.cost[sid]
        else:
            assert c_json is None  # idle windows are not priced
    inputs = sum(len(p.messages) for p in wl.plans)
    print(f"\nkill -9: {len(kills)} kills ({', '.join(kills)}); {len(wl.energy)} scenarios, "
          f"{inputs} input messages; duplicates on scenario.energy {dup_e}, "
          f"cost.results {dup_c}; {len(bad)} hostile messages → {dead} dead letters")
    assert dup_e < inputs and dup_c < inputs


def assigned_partitions(w: Worker) -> set[int]:
    """Partitions of the worker's latest assignment, from its log ('assigned [...]')."""
    last: list[tuple[str, int]] = []
    for line in w.log_path.read_text().splitlines():
        if " assigned [" in line:
            last = ast.literal_eval(line.split(" assigned ", 1)[1])
    return {p for _, p in last}


async def test_scale_out_three_instances_one_killed(kafka: KafkaSettings, tmp_path: Path
                                                     ) -> None:
    seed = 7
    wl = make_workload(hosts=8, per_host=12, seed=seed)
    group = f"g-scale-{uuid.uuid4().hex[:6]}"
    ws = [energy_worker(kafka, tmp_path, group, f"energy{i}") for i in range(3)]
    rng = random.Random(seed)
    waves = 8
    step = wl.span_s / waves + 1e-9
    try:
        for w in ws:
            w.start()
        for w in ws:
            await w.wait_health(200, 90)
        # the first waves while all three share the partitions
        for i in range(3):
            await publish(kafka, wl, i * step, (i + 1) * step)
            await asyncio.sleep(1.0)
        deadline = asyncio.get_running_loop().time() + 60
        while not all(assigned_partitions(w) for w in ws):  # every member holds partitions
            assert asyncio.get_running_loop().time() < deadline, "a member got no partitions"
            await asyncio.sleep(0.5)
        victim = rng.choice(ws)
        lost = assigned_partitions(victim)
        victim.kill9()
        survivors = [w for w in ws if w is not victim]
        for i in range(3, waves + 1):
            await publish(kafka, wl, i * step, (i + 1) * step if i < waves else 1e9)
            await asyncio.sleep(0.5)
        energy = await read_topic(kafka, scenario_energy.TOPIC, ScenarioEnergy.from_bytes,
                                  lambda o: len(o) >= len(wl.energy), 120)
        taken = set().union(*(assigned_partitions(w) for w in survivors))
        for w in survivors:
            assert w.alive(), f"{w.name} exited: {w.log_path}"
    finally:
        codes = [w.term() for w in ws if w.alive()]
    assert codes == [0, 0]
    assert lost and lost <= taken == {0, 1, 2, 3}  # the survivors own the victim's partitions
    dup = check_topic("scenario.energy", energy, wl.energy)
    print(f"\nscale-out: {victim.name} (partitions {sorted(lost)}) killed; "
          f"{len(wl.energy)} scenarios, {dup} duplicate records (all identical)")
    assert dup < sum(len(p.messages) for p in wl.plans)


@pytest.mark.parametrize("events_lag_known", [False, True])
def test_join_result_does_not_depend_on_topic_interleaving(events_lag_known: bool) -> None:
    """After downtime both topics hold a backlog and a poll may return samples far ahead
    of the events of the same partition.  The join must not prune samples that events still
    to be read will need: same records as the undisturbed order, whether the run loop
    reported the events partition's lag or not (then ``max_retention_s`` bounds it).  This
    was a real bug (seen in the kill -9 test with ``grace_s=5``)."""
    wl = make_workload(hosts=1, per_host=10, seed=3)
    join = EnergyJoin(JoinConfig(timeout_s=86_400.0, grace_s=5.0))
    plan = wl.plans[0]
    n_events = sum(1 for _, t, _ in plan.messages if t == scenario_events.TOPIC)
    off = {"s": 0, "e": 0}
    if events_lag_known:
        join.set_events_lag({0: n_events})  # nothing of the events partition read yet
    now = time.time_ns()
    got: dict[str, ScenarioEnergy] = {}
    # the same per-topic order as published, but the samples topic read first (as a poll of
    # a backlog may return it), ready() after every poll as the worker's tick does
    for _, topic, value in plan.messages:
        if topic == power_samples.TOPIC:
            join.add_samples(PowerSamples.from_bytes(value), 0, off["s"])
            off["s"] += 1
            got.update({r.scenario_id: r for r in join.ready(now)})
    if events_lag_known:
        join.set_events_lag({0: 0})
    for _, topic, value in plan.messages:
        if topic == scenario_events.TOPIC:
            ev = scenario_events.parse_scenario_event(value)
            if isinstance(ev, ScenarioStarted):
                join.add_started(ev, 0, off["e"])
            elif isinstance(ev, ScenarioFinished):
                join.add_finished(ev, 0, off["e"])
            off["e"] += 1
    got.update({r.scenario_id: r.model_copy(update={"computed_at_ns": None})
                for r in join.ready(now)})
    assert set(got) == set(wl.energy)
    incomplete = sorted(s for s, r in got.items() if r != wl.energy[s])
    assert not incomplete, f"{len(incomplete)} of {len(got)} differ, e.g. {got[incomplete[0]]}"
