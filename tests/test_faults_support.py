"""Support for the fault tests (no tests here): a synthetic workload with its undisturbed
expectation, workers as real subprocesses, and readers of the result stores.

The workload: ``HOSTS`` hosts (spread over all 4 partitions), each with one idle-baseline
window and ``PER_HOST`` encodes, some of them overlapping (so CPU-share attribution and the
join's retained state are exercised), power samples every 100 ms in batches of 1 s.  Every
figure of the expectation comes from the pure code (``EnergyJoin``, ``cost_for``) on the
same inputs, never from a constant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel

from schemas import power_samples, scenario_events
from schemas.cost_results import CostResult
from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings, ScenarioFinished, ScenarioStarted
from services.cost_worker.app import cost_for
from services.cost_worker.config import PriceBook
from services.energy_worker.logic import EnergyJoin, JoinConfig
from shared.broker import free_port
from shared.kafka import make_consumer, make_producer
from shared.settings import KafkaSettings

S = 10**9
DT_S = 0.1
PKG = Zone(name="package-0", kind="package", source="rapl", basis="measured", scope="component")
DRAM = Zone(name="dram-0", kind="dram", source="rapl", basis="measured", scope="component")
#: the energy worker's join settings in these tests: no timeouts (emission by watermark
#: only, hence deterministic); the default grace (120 s, longer than the workload's 84 s
#: data-time span) unless a test passes a shorter one
JOIN = JoinConfig(timeout_s=86_400.0, grace_s=120.0)

M = TypeVar("M", bound=BaseModel)


def partition_of(host: str, partitions: int = 4) -> int:
    ps = list(range(partitions))
    return int(DefaultPartitioner()(host.encode(), ps, ps))


def spread_hosts(prefix: str, n: int, partitions: int = 4) -> list[str]:
    """``n`` host names, host i on partition i mod ``partitions`` (first names that fit)."""
    out: list[str] = []
    k = 0
    while len(out) < n:
        name = f"{prefix}-{k}"
        if partition_of(name, partitions) == len(out) % partitions:
            out.append(name)
        k += 1
    return out


@dataclass
class Scenario:
    sid: str
    start_s: float
    end_s: float
    level_w: float  # extra power while it runs
    cpu_rate: float  # CPU seconds per wall second
    idle: bool = False


@dataclass
class HostPlan:
    host: str
    scenarios: list[Scenario]
    #: (timeline second, topic, value) in publication order
    messages: list[tuple[float, str, bytes]] = field(default_factory=list)


def plan_host(host: str, k: int, per_host: int, t0_ns: int, rng: random.Random) -> HostPlan:
    """Idle 0-5 s, then ``per_host`` 2 s encodes every 3 s; every 4th overlaps the next."""
    scen = [Scenario(f"{host}-idle", 0.0, 5.0, 0.0, 0.0, idle=True)]
    for j in range(per_host):
        a = 6.0 + 3.0 * j
        b = a + (3.5 if j % 4 == 3 else 2.0)
        scen.append(Scenario(f"{host}-s{j:03d}", a, b, round(rng.uniform(8, 40), 3),
                             round(rng.uniform(0.5, 4.0), 3)))
    span_s = max(s.end_s for s in scen) + 1.0

    def watts(t: float) -> float:
        return 10.0 + k * 0.5 + sum(s.level_w for s in scen if s.start_s <= t < s.end_s)

    n = int(span_s / DT_S) + 1
    cum = 0.0
    samples: list[Sample] = []
    for i in range(n):
        if i:
            cum += watts((i - 1) * DT_S) * DT_S
        t_ns = round(i * DT_S * S)
        samples.append(Sample(seq=i, ts_ns=t0_ns + t_ns, mono_ns=t_ns,
                              energy_j={"package-0": cum * 0.9, "dram-0": cum * 0.1}))
    msgs: list[tuple[float, str, bytes]] = []
    for a in range(0, n, 10):
        chunk = samples[a:a + 10]
        msgs.append(((chunk[-1].ts_ns - t0_ns) / S, power_samples.TOPIC,
                     PowerSamples(host=host, run_id=f"{host}-run", zones=[PKG, DRAM],
                                  samples=chunk).to_bytes()))
    for s in scen:
        st = EncodeSettings(codec="idle" if s.idle else "libx264",
                            preset=None if s.idle else "fast", width=1280, height=720,
                            fps=25, duration_s=2.0)
        start_ns, end_ns = t0_ns + round(s.start_s * S), t0_ns + round(s.end_s * S)
        msgs.append((s.start_s, scenario_events.TOPIC, ScenarioStarted(
            event_id=f"{s.sid}:started", scenario_id=s.sid, host=host, settings=st,
            start_ns=start_ns).to_bytes()))
        msgs.append((s.end_s, scenario_events.TOPIC, ScenarioFinished(
            event_id=f"{s.sid}:finished", scenario_id=s.sid, host=host, settings=st,
            start_ns=start_ns, end_ns=end_ns, frames=50,
            cpu_s=round(s.cpu_rate * (s.end_s - s.start_s), 6), output_bytes=250_000,
            ).to_bytes()))
    msgs.sort(key=lambda m: (m[0], m[1] == scenario_events.TOPIC))  # samples first at a tie
    return HostPlan(host, scen, msgs)


@dataclass
class Workload:
    plans: list[HostPlan]
    energy: dict[str, ScenarioEnergy]  # expected scenario.energy by scenario id
    cost: dict[str, CostResult]  # expected cost.results by scenario id

    @property
    def span_s(self) -> float:
        return max(m[0] for p in self.plans for m in p.messages)


def make_workload(hosts: int, per_host: int, seed: int, grace_s: float = JOIN.grace_s
                  ) -> Workload:
    """Plans of every host and the undisturbed expectation, from the pure join and pricing."""
    rng = random.Random(seed)
    t0 = time.time_ns() - 3600 * S
    names = spread_hosts(f"fh{seed}", hosts)
    plans = [plan_host(h, k, per_host, t0, rng) for k, h in enumerate(names)]
    join = EnergyJoin(JoinConfig(timeout_s=JOIN.timeout_s, grace_s=grace_s))
    offsets: dict[tuple[str, int], int] = {}
    energy: dict[str, ScenarioEnergy] = {}
    now = time.time_ns()
    for plan in plans:
        part = partition_of(plan.host)
        for _, topic, value in plan.messages:
            off = offsets.get((topic, part), 0)
            offsets[(topic, part)] = off + 1
            if topic == power_samples.TOPIC:
                join.add_samples(PowerSamples.from_bytes(value), part, off)
            else:
                ev = scenario_events.parse_scenario_event(value)
                if isinstance(ev, ScenarioStarted):
                    join.add_started(ev, part, off)
                elif isinstance(ev, ScenarioFinished):
                    join.add_finished(ev, part, off)
            for res in join.ready(now):
                assert res.scenario_id not in energy
                energy[res.scenario_id] = res.model_copy(update={"computed_at_ns": None})
    book = PriceBook()
    cost = {sid: cost_for(e, book) for sid, e in energy.items() if not e.settings.is_idle}
    return Workload(plans, energy, cost)


async def publish(kafka: KafkaSettings, wl: Workload, from_s: float, to_s: float) -> int:
    """Publish every host's messages with timeline second in [from_s, to_s) (key host)."""
    p = make_producer(kafka)
    await p.start()
    n = 0
    try:
        for plan in wl.plans:
            for t, topic, value in plan.messages:
                if from_s <= t < to_s:
                    await p.send(kafka.topic(topic), value, key=plan.host.encode())
                    n += 1
        await p.flush()
    finally:
        await p.stop()
    return n


# ---- workers as subprocesses ----------------------------------------------------------

class Worker:
    """One worker process (``python -m services.<module>``), its log and health port."""

    def __init__(self, name: str, module: str, args: list[str], kafka: KafkaSettings,
                 log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name, self.module, self.args = name, module, args
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                    "KAFKA_PARTITIONS": str(kafka.partitions),
                    # a killed member is dropped after 6 s instead of 30 s (keeps tests short)
                    "KAFKA_SESSION_TIMEOUT_MS": "6000",
                    "JOULESTREAM_METRICS_PORT": str(self.port),
                    "JOULESTREAM_METRICS_ADDR": "127.0.0.1",
                    "JOULESTREAM_LOG_LEVEL": "INFO", **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.module}", *self.args], env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None and self.alive(), f"{self.name} died on its own"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def term(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def health(self) -> tuple[int | None, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                        timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (OSError, ValueError):
            return None, {}

    def metric(self, name: str) -> float | None:
        """Sum of a metric's samples on /metrics (None if unreachable or absent)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(name) and (line[len(name)] in " {")]
        return sum(vals) if vals else None

    async def wait_health(self, status: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            code, body = self.health()
            if code == status:
                return body
            assert self.alive(), f"{self.name} exited: see {self.log_path}"
            assert time.monotonic() < deadline, (
                f"{self.name}: /healthz {code} {body}, wanted {status} (log {self.log_path})")
            await asyncio.sleep(0.2)


def energy_worker(kafka: KafkaSettings, log_dir: Path, group: str, name: str = "energy",
                  grace_s: float = JOIN.grace_s) -> Worker:
    return Worker(name, "energy_worker",
                  ["--group", group, "--timeout", str(JOIN.timeout_s), "--grace",
                   str(grace_s)], kafka, log_dir)


def cost_worker(kafka: KafkaSettings, log_dir: Path) -> Worker:
    return Worker("cost", "cost_worker", [], kafka, log_dir)


def trainer(kafka: KafkaSettings, log_dir: Path, data_dir: Path) -> Worker:
    return Worker("trainer", "trainer", [], kafka, log_dir, {
        "JOULESTREAM_TRAINER_DATA_DIR": str(data_dir),
        # these tests are about delivery: no model fitting on the shared 2 cores
        "JOULESTREAM_TRAINER_RETRAIN_EVERY": "0", "JOULESTREAM_TRAINER_DRIFT_FACTOR": "0"})


# ---- result stores --------------------------------------------------------------------

async def read_topic(kafka: KafkaSettings, topic: str, decode: Callable[[bytes], M],
                     until: Callable[[dict[str, list[M]]], bool], timeout_s: float,
                     ignore_keys: frozenset[str] = frozenset()) -> dict[str, list[M]]:
    """Every record of ``topic`` from the start, grouped by key, read until ``until`` holds
    and the end of every partition is reached (or the timeout: returns what it has).
    Records with a key in ``ignore_keys`` (hostile input a test put there) are skipped."""
    c = make_consumer(kafka, None)
    await c.start()
    out: dict[str, list[M]] = {}
    try:
        tps = [TopicPartition(kafka.topic(topic), p) for p in range(kafka.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    key = (r.key or b"").decode()
                    if key not in ignore_keys:
                        out.setdefault(key, []).append(decode(r.value or b""))
            if not batch and until(out):
                at_end = True
                for tp in tps:
                    hw = c.highwater(tp)
                    if hw is None or await c.position(tp) < hw:
                        at_end = False
                if at_end:
                    break
    finally:
        await c.stop()
    return out


def read_trainer_store(data_dir: Path) -> dict[str, tuple[str | None, str | None]]:
    """(energy_json, cost_json) per scenario id in the trainer's SQLite dataset."""
    path = data_dir / "dataset.sqlite"
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT scenario_id, energy_json, cost_json FROM records").fetchall()
    return {sid: (e, c) for sid, e, c in rows}


async def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (-1: none)."""
    c = make_consumer(kafka, group)  # not subscribed: never joins, only asks the coordinator
    await c.start()
    try:
        out = {}
        for p in range(kafka.partitions):
            off = await c.committed(TopicPartition(kafka.topic(topic), p))
            out[p] = -1 if off is None else off
        return out
    finally:
        await c.stop()
