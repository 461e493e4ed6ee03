"""Graceful stop: SIGTERM to a worker process in the middle of a backlog finishes the batch in
hand, produces its outputs, commits and exits 0.  Checked at the Kafka level: every input
below the committed offset has its output, and after a restart nothing that was committed
is processed again (exactly one output per input: zero duplicates).

The cost worker is used: it is stateless (it commits everything it handled), so the
committed offset after a graceful stop must equal what it consumed.  The energy worker,
being stateful, deliberately commits less (its safe offsets) and replays the rest; that is
covered by tests/test_faults.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_faults_support import committed_offsets, cost_worker, read_topic

from schemas import cost_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from shared.kafka import make_producer
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration

S = 10**9
N = 3000


def energy_record(i: int, now_ns: int) -> ScenarioEnergy:
    return ScenarioEnergy(
        scenario_id=f"g-{i:05d}", host=f"h{i % 16}", settings=EncodeSettings(
            codec="libx264", preset="fast", width=1280, height=720, fps=25, duration_s=2.0),
        start_ns=now_ns - 100 * S, end_ns=now_ns - 98 * S, wall_s=2.0, energy_j=40.0 + i % 7,
        zones_j={"package-0": 40.0 + i % 7}, basis="measured", sources=["rapl"],
        scope="component", mean_power_w=20.0, coverage=1.0, max_gap_s=0.1, complete=True,
        n_samples=21, emitted_by="watermark", frames=50, cpu_s=3.0)


async def test_sigterm_finishes_the_batch_commits_and_nothing_is_reprocessed(
        kafka: KafkaSettings, tmp_path: Path) -> None:
    now = time.time_ns()
    recs = [energy_record(i, now) for i in range(N)]
    # which scenario sits at which offset of which partition, as the broker assigns them
    where: dict[int, list[str]] = {}
    w = cost_worker(kafka, tmp_path)
    w.start()
    try:
        await w.wait_health(200, 90)
        p = make_producer(kafka)
        await p.start()
        try:
            futs = [await p.send(kafka.topic(scenario_energy.TOPIC), r.to_bytes(),
                                 key=r.scenario_id.encode()) for r in recs]
            for r, md in zip(recs, await asyncio.gather(*futs), strict=True):
                where.setdefault(md.partition, []).append(r.scenario_id)
                assert md.offset == len(where[md.partition]) - 1
        finally:
            await p.stop()
        # SIGTERM as soon as the worker is working through the backlog
        deadline = time.monotonic() + 60
        while (w.metric("joulestream_cost_worker_messages_consumed_total") or 0) < 1:
            assert time.monotonic() < deadline, "the worker consumed nothing"
            await asyncio.sleep(0.02)
        code = w.term(30)
        assert code == 0, f"exit code {code}: {w.log_path}"
        committed = await committed_offsets(kafka, "joulestream-cost", scenario_energy.TOPIC)
        done = sum(max(0, c) for c in committed.values())
        assert 0 < done < N, f"stopped mid-run? committed {done} of {N}"
        before = await read_topic(kafka, cost_results.TOPIC, CostResult.from_bytes,
                                  lambda o: len(o) >= done, 30)
        # everything committed has its output (outputs are acknowledged before the commit)
        for part, off in committed.items():
            for sid in where.get(part, [])[:max(0, off)]:
                assert sid in before, f"{sid} committed (partition {part}) without output"
        w.start()  # the rest, after a restart
        after = await read_topic(kafka, cost_results.TOPIC, CostResult.from_bytes,
                                 lambda o: len(o) >= N, 120)
    finally:
        w.term()
    assert len(after) == N
    twice = sorted(k for k, v in after.items() if len(v) > 1)
    assert not twice, f"{len(twice)} inputs processed twice, e.g. {twice[:3]}"
    print(f"\ngraceful stop: {done} of {N} committed at SIGTERM, {len(before)} outputs by "
          f"then, 0 reprocessed after the restart")
