"""Runner: executes scenarios with real ffmpeg and publishes scenario events.

CPU time and peak memory of each encode come from the OS (``wait4`` rusage of the ffmpeg
process itself), not from wall time.  A failed encode is published as a ``failed`` event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from schemas import scenario_events
from schemas.scenario_events import (
    EncodeSettings,
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
)
from shared.ffmpeg import ffmpeg_exe, ffmpeg_version
from shared.hardware import host_hardware

from .logic import CONTAINER, Scenario, encode_command, parse_progress

log = logging.getLogger("runner")


@dataclass
class EncodeOutcome:
    exit_code: int
    cpu_s: float
    peak_rss_bytes: int
    frames: int
    output_bytes: int
    stderr_tail: str


def run_ffmpeg(cmd: list[str], output: str) -> EncodeOutcome:
    """Run one ffmpeg process to completion; rusage of exactly that process via wait4."""
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        progress = proc.stdout.read().decode(errors="replace")
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    prog = parse_progress(progress)
    frames = int(prog.get("frame", "0") or 0)
    size = os.path.getsize(output) if os.path.exists(output) else 0
    return EncodeOutcome(proc.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, frames,
                         size, err[-2000:])


class Publisher:
    """Publishes scenario events keyed by host (co-partitioned with power.samples)."""

    def __init__(self, producer: AIOKafkaProducer, host: str,
                 topic: str = scenario_events.TOPIC) -> None:
        self.producer = producer
        self.host = host
        self.topic = topic

    async def publish(self, ev: ScenarioStarted | ScenarioFinished | ScenarioFailed) -> None:
        await self.producer.send_and_wait(self.topic, ev.to_bytes(), key=ev.host.encode())


async def run_scenario(
    pub: Publisher, sc: Scenario, source: str, out_dir: Path, run_id: str,
    reference: str | None = None, lavfi: bool = False,
) -> ScenarioFinished | ScenarioFailed:
    """Encode one scenario (``streams`` concurrent encodes) and publish its events."""
    s = sc.settings
    ext = CONTAINER.get(s.codec, "mkv")
    outputs = [str(out_dir / f"{sc.scenario_id}-s{i}.{ext}") for i in range(s.streams)]
    cmds = [encode_command(ffmpeg_exe(), source, s, o, lavfi=lavfi) for o in outputs]
    start = time.time_ns()
    await pub.publish(ScenarioStarted(event_id=f"{sc.scenario_id}:started",
                                      scenario_id=sc.scenario_id, host=pub.host, run_id=run_id,
                                      settings=s, start_ns=start, pid=os.getpid()))
    t0 = time.monotonic()
    results = await asyncio.gather(*[asyncio.to_thread(run_ffmpeg, c, o)
                                     for c, o in zip(cmds, outputs, strict=True)])
    wall = time.monotonic() - t0
    end = time.time_ns()
    failed = [r for r in results if r.exit_code != 0]
    if failed:
        ev: ScenarioFinished | ScenarioFailed = ScenarioFailed(
            event_id=f"{sc.scenario_id}:failed", scenario_id=sc.scenario_id, host=pub.host,
            run_id=run_id, settings=s, start_ns=start, end_ns=end,
            exit_code=failed[0].exit_code, stderr_tail=failed[0].stderr_tail[-3000:])
    else:
        frames = sum(r.frames for r in results)
        ev = ScenarioFinished(
            event_id=f"{sc.scenario_id}:finished", scenario_id=sc.scenario_id, host=pub.host,
            run_id=run_id, settings=s, start_ns=start, end_ns=end, frames=frames,
            cpu_s=sum(r.cpu_s for r in results), output_path=outputs[0],
            reference_path=reference, output_bytes=sum(r.output_bytes for r in results),
            achieved_fps=frames / wall if wall > 0 else None,
            peak_rss_bytes=max(r.peak_rss_bytes for r in results),
            ffmpeg_version=ffmpeg_version(), hardware=host_hardware())
    await pub.publish(ev)
    return ev


async def run_idle(pub: Publisher, seconds: float, run_id: str, label: str = "idle"
                   ) -> ScenarioFinished:
    """An idle-baseline window: nothing runs on purpose; its energy is the host's idle."""
    sid = f"{run_id}-{label}"
    s = EncodeSettings(codec="idle", duration_s=seconds)
    start = time.time_ns()
    await pub.publish(ScenarioStarted(event_id=f"{sid}:started", scenario_id=sid, host=pub.host,
                                      run_id=run_id, settings=s, start_ns=start))
    await asyncio.sleep(seconds)
    ev = ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=pub.host,
                          run_id=run_id, settings=s, start_ns=start, end_ns=time.time_ns(),
                          frames=0, cpu_s=0.0)
    await pub.publish(ev)
    return ev


async def run_matrix(
    pub: Publisher, scenarios: list[Scenario], source: str, out_dir: Path, run_id: str,
    idle_s: float = 0.0, cooldown_s: float = 0.0, lavfi: bool = False,
    progress: Callable[[int, int, Scenario, ScenarioFinished | ScenarioFailed], None]
    | None = None,
    stop: threading.Event | None = None,
) -> list[ScenarioFinished | ScenarioFailed]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if idle_s > 0:
        await run_idle(pub, idle_s, run_id)
    done: list[ScenarioFinished | ScenarioFailed] = []
    for i, sc in enumerate(scenarios):
        if stop is not None and stop.is_set():
            break
        ev = await run_scenario(pub, sc, source, out_dir, run_id,
                                reference=None if lavfi else source, lavfi=lavfi)
        done.append(ev)
        if progress:
            progress(i + 1, len(scenarios), sc, ev)
        if cooldown_s > 0:
            await asyncio.sleep(cooldown_s)
    return done
