"""``joulestream bench e2e``: end-to-end latency, a ``finished`` event → its ``cost.results``
record, through the energy worker and the cost worker on the embedded broker.

The two workers run as real processes (``python -m services.energy_worker`` /
``services.cost_worker``), as deployed.  A collector emulation publishes one host's power
every 100 ms (one batch per sample, cumulative joules of a 20 W host, estimated basis);
scenarios of 2 s end "now" at random phases of the sampling period, each ``finished`` event
is published at its end and the clock stops when its ``cost.results`` record arrives at a
consumer in this process.  The figure therefore includes waiting for the first sample at or
after the end (the join emits by watermark, 0-100 ms), two worker hops, two produce/ack
cycles and the consumer fetch waits.

Reported: p50 / p95 / max in ms per round and the median of the rounds (several short
rounds, as every figure of ``joulestream bench``).  Group joins and a warm-up scenario are
excluded.  Every number is measured here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from schemas import cost_results, power_samples, scenario_events
from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_events import EncodeSettings, ScenarioFinished
from shared.broker import EmbeddedBroker, free_port
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.settings import KafkaSettings

S = 10**9
CPU = Zone(name="cpu", kind="cpu_estimate", source="estimate", basis="estimated",
           scope="component")


class WorkerProcess:
    """A worker as a subprocess with its own /metrics port; log to ``log_path``."""

    def __init__(self, module: str, args: list[str], kafka: KafkaSettings, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", f"services.{module}", *args]
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                    "JOULESTREAM_METRICS_PORT": str(self.port),
                    "JOULESTREAM_METRICS_ADDR": "127.0.0.1",
                    "JOULESTREAM_LOG_LEVEL": "WARNING", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited; log {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.cmd} not ready; log {self.log_path}")
            await asyncio.sleep(0.2)

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(name) and line[len(name)] in " {"]
        return sum(vals) if vals else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.asynccontextmanager
async def embedded(tmp: Path):  # type: ignore[no-untyped-def]
    """An embedded broker of the benchmark's own and settings with topics created."""
    broker = EmbeddedBroker(tmp / "broker.log").start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=4,
                              topic_prefix=f"b{uuid.uuid4().hex[:8]}.")
        await ensure_topics(kafka)
        yield kafka
    finally:
        broker.stop()


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _measure(kafka: KafkaSettings, rounds: int, per_round: int) -> dict[str, Any]:
    host = "e2e-host"
    t0 = time.time_ns()
    arrived: dict[str, float] = {}
    stop = asyncio.Event()
    prod = make_producer(kafka, linger_ms=0)
    await prod.start()
    cons = make_consumer(kafka, None, fetch_max_wait_ms=10)
    await cons.start()
    tps = [TopicPartition(kafka.topic(cost_results.TOPIC), p) for p in range(kafka.partitions)]
    cons.assign(tps)
    await cons.seek_to_end(*tps)

    async def collector() -> None:  # one sample per batch every 100 ms, absolute deadlines
        seq = 0
        nxt = time.monotonic()
        while not stop.is_set():
            now = time.time_ns()
            msg = PowerSamples(host=host, run_id="e2e-run", zones=[CPU], samples=[Sample(
                seq=seq, ts_ns=now, mono_ns=now - t0, energy_j={"cpu": 20.0 * (now - t0) / S})])
            await prod.send(kafka.topic(power_samples.TOPIC), msg.to_bytes(),
                            key=host.encode())
            seq += 1
            nxt += 0.1
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def reader() -> None:
        while not stop.is_set():
            for recs in (await cons.getmany(timeout_ms=50)).values():
                t = time.perf_counter()
                for r in recs:
                    arrived.setdefault((r.key or b"").decode(), t)

    async def one(sid: str) -> float:
        end = time.time_ns()
        ev = ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=host,
                              settings=EncodeSettings(codec="libx264", preset="veryfast",
                                                      width=1280, height=720, fps=25,
                                                      duration_s=2.0),
                              start_ns=end - 2 * S, end_ns=end, frames=50, cpu_s=1.8)
        t_pub = time.perf_counter()
        await prod.send_and_wait(kafka.topic(scenario_events.TOPIC), ev.to_bytes(),
                                 key=host.encode())
        deadline = time.monotonic() + 60
        while sid not in arrived:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no cost.results for {sid} after 60 s")
            await asyncio.sleep(0.002)
        return (arrived[sid] - t_pub) * 1000

    tasks = [asyncio.create_task(collector()), asyncio.create_task(reader())]
    rng = random.Random(1)
    try:
        await asyncio.sleep(3.0)  # some samples before the first window starts
        await one("warmup")  # also waits out both group joins
        out_rounds = []
        for r in range(rounds):
            lat = []
            for i in range(per_round):
                await asyncio.sleep(2.0 + rng.uniform(0.0, 0.1))  # a random sample phase
                lat.append(await one(f"r{r}-s{i}"))
            out_rounds.append({"p50_ms": round(statistics.median(lat), 1),
                               "p95_ms": round(percentile(lat, 0.95), 1),
                               "max_ms": round(max(lat), 1), "n": len(lat)})
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 5)
        await cons.stop()
        await prod.stop()
    return {
        "latency_p50_ms": statistics.median(r["p50_ms"] for r in out_rounds),
        "latency_p95_ms": statistics.median(r["p95_ms"] for r in out_rounds),
        "latency_max_ms": max(r["max_ms"] for r in out_rounds),
        "rounds": out_rounds,
        "sampling_interval_ms": 100,
        "path": "scenario.events finished -> energy_worker -> scenario.energy -> cost_worker "
                "-> cost.results (workers as processes, embedded broker)",
    }


async def _run(quick: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="joulestream-bench-e2e-"))
    async with embedded(tmp) as kafka:
        workers = [WorkerProcess("energy_worker", ["--timeout", "30"], kafka,
                                 tmp / "energy.log"),
                   WorkerProcess("cost_worker", [], kafka, tmp / "cost.log")]
        try:
            for w in workers:
                w.start()
            for w in workers:
                await w.wait_ready()
            return await _measure(kafka, 3, 8 if quick else 20)
        finally:
            for w in workers:
                w.stop()


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))
