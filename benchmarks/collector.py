"""Collector overhead: CPU used by the power collector at 10 Hz and 100 Hz.

A 4-zone powercap tree (package-0, package-1, dram-0, dram-1, laid out as the kernel's
sysfs) in a temporary directory; the real ``Collector`` samples it on its absolute
deadlines, batches, validates each batch once and serialises it to JSON bytes as for
Kafka.  The Kafka client itself is left out (no broker): its cost depends on the broker and
the network, not on the collector.  CPU is the process's user+system time
(``time.process_time``) over the run divided by wall time: a fraction of one core.

``joulestream bench collector [--quick]`` prints the JSON.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.power_collector.app import Collector
from services.power_collector.metrics import CollectorMetrics
from services.power_collector.sources import RaplSource
from shared.kafka import StopSignal

GOALS = {"cpu_fraction_10hz": 0.005, "cpu_fraction_100hz": 0.02}


def _tree(root: Path) -> Path:
    """The kernel's layout: devices/virtual/powercap/intel-rapl/intel-rapl:N[:M] with
    name/energy_uj/max_energy_range_uj, and a flat symlink per zone in class/powercap."""
    cls = root / "class" / "powercap"
    cls.mkdir(parents=True)
    dev = root / "devices" / "virtual" / "powercap" / "intel-rapl"
    for pkg in (0, 1):
        for sub, name in ((None, f"package-{pkg}"), (2, "dram")):
            dirname = f"intel-rapl:{pkg}" + (f":{sub}" if sub is not None else "")
            d = dev / f"intel-rapl:{pkg}" if sub is None else dev / f"intel-rapl:{pkg}" / dirname
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(name + "\n")
            (d / "energy_uj").write_text(f"{123_456_789 * (pkg + 1)}\n")
            (d / "max_energy_range_uj").write_text("262143328850\n")
            os.symlink(d, cls / dirname)
    return cls


async def _run(cls: Path, interval_s: float, duration_s: float) -> dict[str, Any]:
    reg = CollectorRegistry()
    col = Collector(RaplSource(cls), "bench", interval_s, 50, 0.25, 1_000_000,
                    CollectorMetrics(reg))
    assert len(col.zones) == 4
    stop = StopSignal()
    sent = {"messages": 0, "bytes": 0}

    async def sink() -> None:  # stands in for the publisher: serialise, do not send
        while not (col.sampling_done and not col.spool):
            while col.spool:
                msg = col.spool.popleft()
                sent["bytes"] += len(msg.to_bytes())
                sent["messages"] += 1
            col.wakeup.clear()
            if col.sampling_done:
                break
            await col.wakeup.wait()

    await asyncio.sleep(0.05)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.ensure_future(col.sample_loop(stop)), asyncio.ensure_future(sink())]
    await asyncio.sleep(duration_s)
    stop.set()
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    missed = reg.get_sample_value("joulestream_power_collector_missed_deadlines_total") or 0
    return {"interval_s": interval_s, "wall_s": round(wall, 3), "cpu_s": round(cpu, 4),
            "cpu_fraction": round(cpu / wall, 5), "samples": col.seq,
            "cpu_us_per_sample": round(cpu / max(1, col.seq) * 1e6, 1),
            "missed_deadlines": int(missed), "messages": sent["messages"],
            "bytes_per_sample": round(sent["bytes"] / max(1, col.seq), 1)}


def run(quick: bool = False) -> dict[str, Any]:
    duration = 5.0 if quick else 20.0
    load = float(Path("/proc/loadavg").read_text().split()[0])  # others on the machine
    root = Path(tempfile.mkdtemp(prefix="js-bench-powercap-"))
    try:
        cls = _tree(root)
        r10 = asyncio.run(_run(cls, 0.1, duration))
        r100 = asyncio.run(_run(cls, 0.01, duration))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "loadavg_1m_at_start": load,
        "cpu_fraction_10hz": r10["cpu_fraction"],
        "cpu_fraction_100hz": r100["cpu_fraction"],
        "goal_10hz": GOALS["cpu_fraction_10hz"],
        "goal_100hz": GOALS["cpu_fraction_100hz"],
        "meets_goals": r10["cpu_fraction"] <= GOALS["cpu_fraction_10hz"]
        and r100["cpu_fraction"] <= GOALS["cpu_fraction_100hz"],
        "zones": 4,
        "included": "whole-process CPU (user+system) while sampling a 4-zone powercap tree "
                    "on files: deadline loop (sampler thread) and the asyncio loop, "
                    "sysfs-style reads, wrap correction, Prometheus gauges, batching, one "
                    "pydantic validation per batch, JSON serialisation; excluded: the Kafka "
                    "client and network",
        "runs": {"10hz": r10, "100hz": r100},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
