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

import asyncio
import random
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

from schemas import cost_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.scenario_energy import ScenarioEnergy
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
    energy = await read_topic(kafka, scenario_energy.TOPIC, ScenarioEnergy.from_bytes,
                              lambda o: len(o) >= len(wl.energy), timeout_s)
    cost = await read_topic(kafka, cost_results.TOPIC, CostResult.from_bytes,
                            lambda o: len(o) >= len(wl.cost), timeout_s)
    return energy, cost


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


async def test_kill9_each_worker_at_random_points(kafka: KafkaSettings, tmp_path: Path) -> None:
    seed = 20_240_9
    wl = make_workload(hosts=8, per_host=26, seed=seed)
    assert len(wl.energy) >= 200 and len(wl.cost) >= 200
    assert {partition_of(p.host) for p in wl.plans} == {0, 1, 2, 3}
    data = tmp_path / "trainer"
    workers = [energy_worker(kafka, tmp_path, f"g-energy-{uuid.uuid4().hex[:6]}"),
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
        for i in range(waves + 1):
            await publish(kafka, wl, i * step, (i + 1) * step if i < waves else 1e9)
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
          f"cost.results {dup_c}")
    assert dup_e < inputs and dup_c < inputs
