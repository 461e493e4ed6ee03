"""``joulestream bench soak``: 100 synthetic hosts at 10 Hz through ``power.samples`` into the
energy worker for 10 minutes (``--quick``: 60 s); the worker's memory must stay flat.

The energy worker runs as a real process with its defaults (``--timeout 30 --grace 120``)
on the embedded broker.  A publisher in this process emulates 100 collectors in real time:
each host samples every 100 ms and publishes a batch every 250 ms (the collector's default
``batch_max_age_s``), cumulative joules of an idle 10 W host plus 25 W while a scenario
runs; every host runs a 5 s scenario every 20 s (``started`` then ``finished`` events, phases
staggered), so the join holds, emits and prunes state all along.

Every ``rss_every_s`` the worker's resident set (``VmRSS`` from ``/proc/<pid>/status``) is
read.  Reported: RSS at the start (the first reading after warm-up: 150 s, once the 120 s
grace window of samples is full; half the run with ``--quick``, which therefore still
includes filling it), at the end, the maximum, and the least-squares slope after warm-up in
MiB per minute (flat memory: close to 0), plus the worker's CPU
(fraction of one core), what was published and emitted and the consumer lag at the end.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from schemas import power_samples, scenario_events
from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_events import EncodeSettings, ScenarioFinished, ScenarioStarted
from shared.kafka import make_producer
from shared.settings import KafkaSettings

from .e2e import WorkerProcess, embedded

S = 10**9
ZONES = [Zone(name="package-0", kind="package", source="rapl", basis="measured",
              scope="component"),
         Zone(name="dram-0", kind="dram", source="rapl", basis="measured", scope="component")]
HOSTS = 100
HZ = 10.0
BATCH_S = 0.25
SCENARIO_EVERY_S = 20.0
SCENARIO_S = 5.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Publisher:
    """100 emulated collectors (and scenario runners) publishing in real time."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.t0 = time.time_ns()
        self.hosts = [f"soak-{i:03d}" for i in range(HOSTS)]
        self.seq = [0] * HOSTS
        self.energy = [0.0] * HOSTS
        self.last_ns = [self.t0] * HOSTS
        self.open: dict[int, tuple[str, int]] = {}
        self.samples = 0
        self.events = 0
        self.scenarios = 0

    def _load(self, h: int, t_ns: int) -> bool:
        phase = ((t_ns - self.t0) / S + h * SCENARIO_EVERY_S / HOSTS) % SCENARIO_EVERY_S
        return phase < SCENARIO_S

    async def run(self, duration_s: float) -> None:
        p = make_producer(self.kafka)
        await p.start()
        try:
            nxt = time.monotonic()
            end = nxt + duration_s
            while time.monotonic() < end:
                now = time.time_ns()
                for h, host in enumerate(self.hosts):
                    await self._host(p, h, host, now)
                nxt += BATCH_S
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            await p.flush()
        finally:
            await p.stop()

    async def _host(self, p: Any, h: int, host: str, now: int) -> None:
        step = int(S / HZ)
        smp = []
        t = self.last_ns[h] + step
        while t <= now:
            watts = 10.0 + (25.0 if self._load(h, t) else 0.0)
            self.energy[h] += watts * step / S
            smp.append(Sample(seq=self.seq[h], ts_ns=t, mono_ns=t - self.t0,
                              energy_j={"package-0": self.energy[h] * 0.9,
                                        "dram-0": self.energy[h] * 0.1}))
            self.seq[h] += 1
            self.last_ns[h] = t
            t += step
        key = host.encode()
        if smp:
            msg = PowerSamples(host=host, run_id=f"{host}-run", zones=ZONES, samples=smp)
            await p.send(self.kafka.topic(power_samples.TOPIC), msg.to_bytes(), key=key)
            self.samples += len(smp)
        loaded = self._load(h, now)
        settings = EncodeSettings(codec="libx264", preset="fast", width=1920, height=1080,
                                  fps=30, duration_s=SCENARIO_S)
        if loaded and h not in self.open:
            sid = f"{host}-{self.scenarios}"
            self.scenarios += 1
            self.open[h] = (sid, now)
            ev: Any = ScenarioStarted(event_id=f"{sid}:started", scenario_id=sid, host=host,
                                      settings=settings, start_ns=now)
            await p.send(self.kafka.topic(scenario_events.TOPIC), ev.to_bytes(), key=key)
            self.events += 1
        elif not loaded and h in self.open:
            sid, start = self.open.pop(h)
            ev = ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=host,
                                  settings=settings, start_ns=start, end_ns=now, frames=150,
                                  cpu_s=4.0)
            await p.send(self.kafka.topic(scenario_events.TOPIC), ev.to_bytes(), key=key)
            self.events += 1


async def _run(quick: bool) -> dict[str, Any]:
    duration = 60.0 if quick else 600.0
    every = 2.0 if quick else 5.0
    tmp = Path(tempfile.mkdtemp(prefix="joulestream-bench-soak-"))
    async with embedded(tmp) as kafka:
        w = WorkerProcess("energy_worker", [], kafka, tmp / "energy.log").start()
        try:
            await w.wait_ready()
            pub = Publisher(kafka)
            readings: list[tuple[float, float]] = []
            cpu0, t_start = cpu_s(w.pid), time.monotonic()

            async def sample_rss() -> None:
                while True:
                    readings.append((time.monotonic() - t_start, rss_mib(w.pid)))
                    await asyncio.sleep(every)

            sampler = asyncio.create_task(sample_rss())
            await pub.run(duration)
            await asyncio.sleep(SCENARIO_S)  # let the last windows be emitted
            sampler.cancel()
            wall = time.monotonic() - t_start
            cpu = (cpu_s(w.pid) - cpu0) / wall
            emitted = w.metric("joulestream_energy_worker_scenarios_total")
            lag = w.metric("joulestream_energy_worker_consumer_lag_messages")
            pending = w.metric("joulestream_energy_worker_pending_scenarios")
        finally:
            w.stop()
    warmup = 150.0 if duration > 300 else 0.5 * duration
    warm = [r for r in readings if r[0] >= warmup]
    t = np.array([r[0] for r in warm]) / 60.0
    rss = np.array([r[1] for r in warm])
    slope = float(np.polyfit(t, rss, 1)[0]) if len(warm) >= 3 else float("nan")
    return {
        "duration_s": duration,
        "hosts": HOSTS,
        "sample_rate_hz": HZ,
        "samples_published": pub.samples,
        "samples_per_s": round(pub.samples / duration, 1),
        "scenario_events_published": pub.events,
        "scenarios_emitted": emitted,
        "pending_scenarios_at_end": pending,
        "consumer_lag_at_end_messages": lag,
        "worker_cpu_fraction": round(cpu, 3),
        "rss_start_mib": round(float(rss[0]), 1) if len(rss) else None,
        "rss_end_mib": round(float(rss[-1]), 1) if len(rss) else None,
        "rss_max_mib": round(max(r[1] for r in readings), 1),
        "rss_slope_mib_per_min_after_warmup": round(slope, 3),
        "rss_readings": len(readings),
        "rss_every_s": every,
        "warmup_s": warmup,
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))
