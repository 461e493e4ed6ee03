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
    exit_code: int | None  # None: the process could not be started
    cpu_s: float
    peak_rss_bytes: int
    frames: int
    output_bytes: int
    stderr_tail: str


def is_url(output: str) -> bool:
    return "://" in output


def run_ffmpeg(cmd: list[str], output: str) -> EncodeOutcome:
    """Run one ffmpeg process to completion; rusage of exactly that process via wait4.

    Never raises for a failed encode: a non-zero exit (or a process that cannot start) is
    returned with the tail of stderr.  Output size is the file's size, or for a live URL
    the bytes ffmpeg reports having written (``total_size`` of ``-progress``)."""
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf,
                                    stdin=subprocess.DEVNULL)
        except OSError as e:
            return EncodeOutcome(None, 0.0, 0, 0, 0, f"cannot start {cmd[0]}: {e}")
        assert proc.stdout is not None
        progress = proc.stdout.read().decode(errors="replace")
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    prog = parse_progress(progress)
    try:
        frames = int(prog.get("frame", "0") or 0)
    except ValueError:
        frames = 0
    if not is_url(output) and os.path.exists(output):
        size = os.path.getsize(output)
    else:
        try:
            size = int(prog.get("total_size", "0") or 0)
        except ValueError:
            size = 0
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


def output_targets(sc: Scenario, out_dir: Path, live: str | None) -> list[str]:
    """Where each stream of a scenario goes: files in ``out_dir``, or the ``live`` template
    (``{id}`` → scenario id, ``{stream}`` → stream index; ``-s<i>`` is appended to a file
    template without ``{stream}`` when there are several streams)."""
    s = sc.settings
    if live is None:
        ext = CONTAINER.get(s.codec, "mkv")
        return [str(out_dir / f"{sc.scenario_id}-s{i}.{ext}") for i in range(s.streams)]
    out = []
    for i in range(s.streams):
        t = live.replace("{id}", sc.scenario_id).replace("{stream}", str(i))
        if s.streams > 1 and "{stream}" not in live:
            if is_url(t):
                t = f"{t}-s{i}"
            else:
                root, ext = os.path.splitext(t)
                t = f"{root}-s{i}{ext}"
        out.append(t)
    return out


async def run_scenario(
    pub: Publisher, sc: Scenario, source: str, out_dir: Path, run_id: str,
    reference: str | None = None, lavfi: bool = False, live_output: str | None = None,
) -> ScenarioFinished | ScenarioFailed:
    """Encode one scenario (``streams`` concurrent encodes) and publish its events.

    ``started`` carries the settings, host, pid, wall and monotonic start; ``finished`` the
    frames, achieved fps, output size and real bitrate, CPU seconds and peak memory from the
    OS, and the ffmpeg version; ``failed`` (any stream exiting non-zero) the exit status,
    the tail of stderr and the CPU seconds spent.  A failed encode never raises."""
    s = sc.settings
    outputs = output_targets(sc, out_dir, live_output)
    for o in outputs:
        if not is_url(o):
            Path(o).parent.mkdir(parents=True, exist_ok=True)
    cmds = [encode_command(ffmpeg_exe(), source, s, o, lavfi=lavfi) for o in outputs]
    start = time.time_ns()
    mono0 = time.monotonic_ns()
    await pub.publish(ScenarioStarted(event_id=f"{sc.scenario_id}:started",
                                      scenario_id=sc.scenario_id, host=pub.host, run_id=run_id,
                                      settings=s, start_ns=start, pid=os.getpid(),
                                      start_mono_ns=mono0))
    results = await asyncio.gather(*[asyncio.to_thread(run_ffmpeg, c, o)
                                     for c, o in zip(cmds, outputs, strict=True)])
    mono1 = time.monotonic_ns()
    end = time.time_ns()
    wall = (mono1 - mono0) / 1e9
    cpu = sum(r.cpu_s for r in results)
    failed = [r for r in results if r.exit_code != 0]
    if failed:
        ev: ScenarioFinished | ScenarioFailed = ScenarioFailed(
            event_id=f"{sc.scenario_id}:failed", scenario_id=sc.scenario_id, host=pub.host,
            run_id=run_id, settings=s, start_ns=start, end_ns=end,
            exit_code=failed[0].exit_code, stderr_tail=failed[0].stderr_tail[-3000:],
            cpu_s=cpu, start_mono_ns=mono0, end_mono_ns=mono1)
    else:
        frames = sum(r.frames for r in results)
        nbytes = sum(r.output_bytes for r in results)
        content_s = s.duration_s
        live = outputs[0] if is_url(outputs[0]) else None
        ev = ScenarioFinished(
            event_id=f"{sc.scenario_id}:finished", scenario_id=sc.scenario_id, host=pub.host,
            run_id=run_id, settings=s, start_ns=start, end_ns=end, frames=frames,
            cpu_s=cpu, output_path=None if live else outputs[0],
            reference_path=reference, output_bytes=nbytes,
            achieved_fps=frames / wall if wall > 0 else None,
            peak_rss_bytes=max(r.peak_rss_bytes for r in results),
            ffmpeg_version=ffmpeg_version(), hardware=host_hardware(),
            start_mono_ns=mono0, end_mono_ns=mono1,
            output_bitrate_kbps=(nbytes * 8 / 1000 / content_s / s.streams
                                 if content_s > 0 else None),
            live_output=live)
    await pub.publish(ev)
    return ev


async def run_idle(pub: Publisher, seconds: float, run_id: str, label: str = "idle"
                   ) -> ScenarioFinished:
    """An idle-baseline window: nothing runs on purpose; its energy is the host's idle.

    The energy worker turns it into the host's baseline (``host.baselines``); scenarios that
    start after it get dynamic energy (above idle) beside total energy."""
    sid = f"{run_id}-{label}"
    s = EncodeSettings(codec="idle", duration_s=seconds)
    start = time.time_ns()
    mono0 = time.monotonic_ns()
    await pub.publish(ScenarioStarted(event_id=f"{sid}:started", scenario_id=sid, host=pub.host,
                                      run_id=run_id, settings=s, start_ns=start,
                                      pid=os.getpid(), start_mono_ns=mono0))
    await asyncio.sleep(seconds)
    ev = ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=pub.host,
                          run_id=run_id, settings=s, start_ns=start, end_ns=time.time_ns(),
                          frames=0, cpu_s=0.0, start_mono_ns=mono0,
                          end_mono_ns=time.monotonic_ns())
    await pub.publish(ev)
    return ev


async def warm_up(sc: Scenario, source: str, out_dir: Path, seconds: float,
                  lavfi: bool = False) -> EncodeOutcome:
    """An unrecorded encode of ``seconds`` of content at the first scenario's settings, so
    caches, page cache and CPU frequency are settled before anything is measured."""
    s = sc.settings.model_copy(update={"duration_s": seconds, "streams": 1, "realtime": False})
    out = str(out_dir / f"warmup.{CONTAINER.get(s.codec, 'mkv')}")
    return await asyncio.to_thread(
        run_ffmpeg, encode_command(ffmpeg_exe(), source, s, out, lavfi=lavfi), out)


async def run_matrix(
    pub: Publisher, scenarios: list[Scenario], source: str, out_dir: Path, run_id: str,
    idle_s: float = 0.0, cooldown_s: float = 0.0, lavfi: bool = False,
    progress: Callable[[int, int, Scenario, ScenarioFinished | ScenarioFailed], None]
    | None = None,
    stop: threading.Event | None = None,
    warmup_s: float = 0.0, live_output: str | None = None,
) -> list[ScenarioFinished | ScenarioFailed]:
    """Idle baseline (``idle_s`` > 0), warm-up (``warmup_s`` > 0), then every scenario in
    order with ``cooldown_s`` of rest after each.  Returns the finished/failed events."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    if idle_s > 0:
        await run_idle(pub, idle_s, run_id)
    if warmup_s > 0 and scenarios:
        w = await warm_up(scenarios[0], source, out_dir, warmup_s, lavfi)
        if w.exit_code != 0:
            log.warning("warm-up encode failed (exit %s): %s", w.exit_code, w.stderr_tail[-300:])
    done: list[ScenarioFinished | ScenarioFailed] = []
    for i, sc in enumerate(scenarios):
        if stop is not None and stop.is_set():
            break
        ev = await run_scenario(pub, sc, source, out_dir, run_id,
                                reference=None if lavfi else source, lavfi=lavfi,
                                live_output=live_output)
        done.append(ev)
        if progress:
            progress(i + 1, len(scenarios), sc, ev)
        if cooldown_s > 0 and i + 1 < len(scenarios):
            await asyncio.sleep(cooldown_s)
    return done
