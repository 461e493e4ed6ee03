"""``joulestream bench join``: the energy join's throughput, latency and accuracy.

* ``samples_per_s_pure``: decode (pydantic, as the worker does) + join of batched power
  samples in one process, no broker; ``samples_per_s_join_only`` without the decode.
* ``samples_per_s_broker``: the same through the embedded broker with the real worker loop
  (``run_worker`` + ``EnergyProcessor``), batches of 500 samples, timed from the first record
  handled to the last (group join excluded).
* ``latency_p95_ms`` (and p50/max): wall time from publishing a ``finished`` event to
  receiving its ``scenario.energy`` record, with a collector emulation publishing a sample
  every ``interval_s`` (one sample per batch) and scenarios ending at random phases.
  ``latency_goal_ms`` = 2 sampling intervals + 200 ms.
* ``energy_error_pct`` vs ``old_method_error_pct``: per scenario length (5, 30, 300 s), mean
  absolute error against the exact integral of a synthetic encode-like power trace (wall
  time of a scenario = nominal length x U(0.9, 1.1)): ours
  (100 ms counter samples, interpolated at the window edges, through ``EnergyJoin``) and the
  old project's method (``increase(counter[<int(d)>s])`` at ``time=end`` over 5 s scrapes,
  Prometheus 2.x extrapolation emulated).  ``old_method_missing_pct`` counts windows where
  ``increase()`` returned no value (fewer than two scrapes in range).

Every figure is computed here, on this machine; nothing is copied from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from typing import Any

import numpy as np

from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_events import EncodeSettings, ScenarioFinished

S = 10**9
ZONES = [Zone(name="package-0", kind="package", source="rapl", basis="measured",
              scope="component"),
         Zone(name="dram-0", kind="dram", source="rapl", basis="measured", scope="component")]


def _batches(host: str, n_batches: int, per_batch: int, t0: int, dt_ns: int) -> list[bytes]:
    out = []
    seq = 0
    for _ in range(n_batches):
        smp = []
        for _ in range(per_batch):
            t = seq * dt_ns
            smp.append(Sample(seq=seq, ts_ns=t0 + t, mono_ns=t,
                              energy_j={"package-0": 30.0 * t / S, "dram-0": 3.0 * t / S}))
            seq += 1
        out.append(PowerSamples(host=host, run_id=f"{host}-r", zones=ZONES,
                                samples=smp).to_bytes())
    return out


# ---- pure throughput --------------------------------------------------------------------

def bench_pure(quick: bool) -> dict[str, float]:
    from services.energy_worker.logic import EnergyJoin, JoinConfig

    hosts = 4
    n, per = (40, 500) if quick else (200, 500)
    t0 = time.time_ns() - 10 * 86400 * S
    data = [(h, _batches(f"h{h}", n, per, t0, S // 10)) for h in range(hosts)]
    total = hosts * n * per

    def one(decode: Any) -> float:
        j = EnergyJoin(JoinConfig(grace_s=60))
        t = time.perf_counter()
        for h, bs in data:
            for i, b in enumerate(bs):
                j.add_samples(decode(b), h, i)
                if i % 10 == 0:
                    j.ready(t0 + i * per * S // 10)
        return total / (time.perf_counter() - t)

    worker = one(PowerSamples.from_bytes)
    msgs = [(PowerSamples.from_bytes(b), h) for h, bs in data for b in bs]
    j = EnergyJoin(JoinConfig(grace_s=60))
    t = time.perf_counter()
    for i, (m, h) in enumerate(msgs):
        j.add_samples(m, h, i)
        if i % 10 == 0:
            j.ready(t0)
    join_only = total / (time.perf_counter() - t)
    return {"samples_per_s_pure": round(worker), "samples_per_s_join_only": round(join_only)}


# ---- through the broker -----------------------------------------------------------------

async def _with_broker(fn: Any) -> Any:
    import tempfile
    from pathlib import Path

    from shared.broker import EmbeddedBroker
    from shared.kafka import ensure_topics
    from shared.settings import KafkaSettings

    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(Path(d) / "broker.log") as b:
        kafka = KafkaSettings(bootstrap_servers=b.bootstrap,
                              topic_prefix=f"b{uuid.uuid4().hex[:8]}.", partitions=4)
        await ensure_topics(kafka)
        return await fn(kafka)


async def bench_broker(kafka: Any, quick: bool) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from schemas import power_samples
    from services.energy_worker.app import EnergyProcessor
    from services.energy_worker.logic import JoinConfig
    from shared.httpserver import Health
    from shared.kafka import StopSignal, make_producer, run_worker

    hosts, n, per = (4, 50, 500) if quick else (4, 250, 500)
    total = hosts * n * per
    t0 = time.time_ns() - 10 * 86400 * S
    p = make_producer(kafka, linger_ms=20)
    await p.start()
    try:
        for h in range(hosts):
            for b in _batches(f"host{h}", n, per, t0, S // 10):
                await p.send(kafka.topic(power_samples.TOPIC), b, key=f"host{h}".encode())
        await p.flush()
    finally:
        await p.stop()
    proc = EnergyProcessor(CollectorRegistry(), JoinConfig(grace_s=60))
    seen = [0, 0.0, 0.0]
    orig = proc.handle

    async def handle(record: Any) -> Any:
        now = time.perf_counter()
        if seen[0] == 0:
            seen[1] = now
        seen[0] += 1
        seen[2] = now
        return await orig(record)

    proc.handle = handle  # type: ignore[method-assign]
    stop = StopSignal()
    task = asyncio.create_task(run_worker(proc, kafka, "bench-join", CollectorRegistry(),
                                          Health(), stop, max_records=2000))
    deadline = time.monotonic() + 300
    while seen[0] < hosts * n and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.05)
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    dt = seen[2] - seen[1]
    return {"samples_per_s_broker": round(total / dt) if seen[0] >= hosts * n and dt > 0 else 0,
            "broker_samples": total, "broker_batch_samples": per}


async def bench_latency(kafka: Any, quick: bool, interval_s: float = 0.1) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from schemas import power_samples, scenario_energy, scenario_events
    from schemas.scenario_energy import ScenarioEnergy
    from services.energy_worker.app import EnergyProcessor
    from services.energy_worker.logic import JoinConfig
    from shared.httpserver import Health
    from shared.kafka import StopSignal, make_consumer, make_producer, run_worker

    stop = StopSignal()
    proc = EnergyProcessor(CollectorRegistry(), JoinConfig(timeout_s=30))
    worker = asyncio.create_task(run_worker(proc, kafka, "bench-lat", CollectorRegistry(),
                                            Health(), stop))
    prod = make_producer(kafka, linger_ms=0)
    await prod.start()
    cons = make_consumer(kafka, None, fetch_max_wait_ms=kafka.fetch_max_wait_ms)
    await cons.start()
    from aiokafka import TopicPartition

    tps = [TopicPartition(kafka.topic(scenario_energy.TOPIC), p) for p in range(kafka.partitions)]
    cons.assign(tps)
    await cons.seek_to_end(*tps)
    host = "lat-host"
    zones = ZONES[:1]
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    stopping = asyncio.Event()

    async def collector() -> None:
        seq, t_start = 0, time.time_ns()
        nxt = time.monotonic()
        while not stopping.is_set():
            now = time.time_ns()
            smp = Sample(seq=seq, ts_ns=now, mono_ns=now - t_start,
                         energy_j={"package-0": 25.0 * (now - t_start) / S})
            await prod.send(kafka.topic(power_samples.TOPIC), PowerSamples(
                host=host, run_id="lat", zones=zones, samples=[smp]).to_bytes(),
                key=host.encode())
            seq += 1
            nxt += interval_s
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def listener() -> None:
        while not stopping.is_set():
            for recs in (await cons.getmany(timeout_ms=100)).values():
                for r in recs:
                    e = ScenarioEnergy.from_bytes(r.value or b"")
                    got.setdefault(e.scenario_id, time.monotonic())

    tasks = [asyncio.create_task(collector()), asyncio.create_task(listener())]
    # wait for the worker's group join (~5 s on the embedded broker) and catch-up
    deadline = time.monotonic() + 60
    while not proc.consumed and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    n = 10 if quick else 40
    rng = random.Random(7)
    for i in range(n):
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        end = time.time_ns()
        sid = f"lat-{i}"
        ev = ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=host,
                              settings=EncodeSettings(codec="libx264", duration_s=1),
                              start_ns=end - S, end_ns=end, frames=25, cpu_s=1.0)
        sent[sid] = time.monotonic()
        await prod.send_and_wait(kafka.topic(scenario_events.TOPIC), ev.to_bytes(),
                                 key=host.encode())
    deadline = time.monotonic() + 40
    while len(got) < n and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.1)
    stopping.set()
    for t in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(t, 5)
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker, 30)
    await cons.stop()
    await prod.stop()
    lat = sorted((got[s] - sent[s]) * 1000 for s in sent if s in got)
    if not lat:
        return {"latency_p95_ms": -1, "latency_missing": n}
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return {"latency_p50_ms": round(statistics.median(lat), 1), "latency_p95_ms": round(p95, 1),
            "latency_max_ms": round(lat[-1], 1), "latency_n": len(lat),
            "latency_missing": n - len(lat), "sampling_interval_ms": interval_s * 1000,
            "latency_goal_ms": 2 * interval_s * 1000 + 200}


# ---- accuracy: ours vs Prometheus increase() -----------------------------------------------

def encode_trace(rng: np.random.Generator, length_s: float, pre_s: float, post_s: float,
                 step_s: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """An encode-like package power trace (W) at 1 ms: ~18 W idle, a ramp to ~55 W with
    GOP-period ripple, per-10 ms noise and a few I/O dips during the encode."""
    t = np.arange(0.0, pre_s + length_s + post_s, step_s)
    busy = (t >= pre_s) & (t < pre_s + length_s)
    ramp = np.clip((t - pre_s) / 0.3, 0, 1) * busy
    p = 18.0 + ramp * (37.0 + 6.0 * np.sin(2 * np.pi * (t - pre_s) / 2.0))
    noise = rng.normal(0, 4.0, size=int(len(t) / 10) + 1).repeat(10)[: len(t)]
    p = p + noise * busy + rng.normal(0, 0.5, size=len(t))
    dips = rng.uniform(pre_s, pre_s + length_s, size=max(1, int(length_s / 10)))
    for d in dips:
        p[(t >= d) & (t < d + 0.4)] -= 20.0
    return t, np.clip(p, 1.0, None)


def prom_increase(ts_s: np.ndarray, vals: np.ndarray, eval_t: float, range_s: float
                  ) -> float | None:
    """Prometheus 2.x ``increase(v[range])`` at ``eval_t`` (extrapolatedRate, counter)."""
    lo = eval_t - range_s
    sel = (ts_s >= lo) & (ts_s <= eval_t)
    t, v = ts_s[sel], vals[sel]
    if len(t) < 2:
        return None
    result = float(v[-1] - v[0])  # no counter resets in the trace
    to_start, to_end = float(t[0] - lo), float(eval_t - t[-1])
    sampled = float(t[-1] - t[0])
    avg = sampled / (len(t) - 1)
    if result > 0 and v[0] >= 0:
        to_zero = sampled * (float(v[0]) / result)
        to_start = min(to_start, to_zero)
    threshold = avg * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg / 2
    interval += to_end if to_end < threshold else avg / 2
    return result * (interval / sampled)


def bench_accuracy(quick: bool) -> dict[str, Any]:
    from services.energy_worker.logic import EnergyJoin

    rng = np.random.default_rng(2024)
    step = 0.001
    ours: dict[str, list[float]] = {}
    old: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    reps = {5: 30 if quick else 120, 30: 12 if quick else 60, 300: 3 if quick else 12}
    base_ns = (time.time_ns() // S - 2 * 86400) * S
    for length, k in reps.items():
        key = str(length)
        ours[key], old[key], missing[key] = [], [], 0
        for _ in range(k):
            pre = float(rng.uniform(8, 15))
            # an encode of L s of content does not take exactly L s of wall time
            wall = length * float(rng.uniform(0.9, 1.1))
            t, p = encode_trace(rng, wall, pre, 8.0, step)
            # the exporter's counter has been running for an hour at idle already
            cum = np.concatenate([[0.0], np.cumsum(p[:-1] * step)]) + 18.0 * 3600
            start, end = pre, pre + wall
            truth = float(np.interp(end, t, cum) - np.interp(start, t, cum))
            # ours: a collector reading the counter every 100 ms at a random phase
            ph = float(rng.uniform(0, 0.1))
            st_ = np.arange(ph, t[-1], 0.1)
            sv = np.interp(st_, t, cum)
            smp = [Sample(seq=i, ts_ns=base_ns + round(x * S), mono_ns=round(x * S),
                          energy_j={"package-0": float(v)}) for i, (x, v) in enumerate(
                              zip(st_, sv, strict=True))]
            j = EnergyJoin()
            for a in range(0, len(smp), 500):
                j.add_samples(PowerSamples(host="acc", run_id="r", zones=ZONES[:1],
                                           samples=smp[a:a + 500]), 0, a)
            ev = ScenarioFinished(event_id="a:finished", scenario_id="a", host="acc",
                                  settings=EncodeSettings(codec="libx264", duration_s=length),
                                  start_ns=base_ns + round(start * S),
                                  end_ns=base_ns + round(end * S), frames=1, cpu_s=1.0)
            res = j.compute(ev, 0, "watermark")
            ours[key].append(abs(res.energy_j - truth) / truth * 100)
            # old: 5 s scrapes at a random phase, increase(x[int(d)s]) at time=end
            ph5 = float(rng.uniform(0, 5))
            sc_t = np.arange(ph5, t[-1], 5.0)
            sc_v = np.interp(sc_t, t, cum)
            inc = prom_increase(sc_t, sc_v, end, float(int(wall)))  # the seed's int(duration)
            if inc is None:
                missing[key] += 1
            else:
                old[key].append(abs(inc - truth) / truth * 100)

    def summary(xs: list[float]) -> float | None:
        return round(float(np.mean(xs)), 4) if xs else None

    return {
        "energy_error_pct": {k: summary(v) for k, v in ours.items()},
        "energy_error_p95_pct": {k: round(float(np.percentile(v, 95)), 4)
                                 for k, v in ours.items()},
        "old_method_error_pct": {k: summary(v) for k, v in old.items()},
        "old_method_error_p95_pct": {k: (round(float(np.percentile(v, 95)), 4) if v else None)
                                     for k, v in old.items()},
        "old_method_missing_pct": {k: round(100 * missing[k] / reps[int(k)], 1)
                                   for k in missing},
        "scenarios_per_length": {str(k): v for k, v in reps.items()},
        "error_basis": "mean |estimate - exact integral| / exact, synthetic encode-like trace",
    }


def run(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(bench_pure(quick))

    async def broker_parts(kafka: Any) -> dict[str, Any]:
        r = await bench_broker(kafka, quick)
        r.update(await bench_latency(kafka, quick))
        return r

    out.update(asyncio.run(_with_broker(broker_parts)))
    out["samples_per_s_broker_goal"] = 100_000
    out.update(bench_accuracy(quick))
    return out
