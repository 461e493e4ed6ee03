"""``joulestream runner``: run an encoding matrix (from flags or ``--matrix FILE``) and
``joulestream runner idle --seconds N`` (an idle baseline on demand)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def _publisher_session(fn: Any) -> None:
    """Run ``fn(pub)`` with a started producer and a Publisher for this host."""
    from schemas import scenario_events
    from shared.kafka import ensure_topics, make_producer
    from shared.settings import KafkaSettings, ServiceSettings

    from .app import Publisher

    async def go() -> None:
        kafka = KafkaSettings()
        await ensure_topics(kafka)
        producer = make_producer(kafka)
        await producer.start()
        try:
            await fn(Publisher(producer, ServiceSettings().host,
                               kafka.topic(scenario_events.TOPIC)))
        finally:
            await producer.stop()

    asyncio.run(go())


def load_matrix_file(path: str) -> Any:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) matrix file."""
    from .logic import parse_matrix_text

    fmt = "toml" if path.lower().endswith(".toml") else "yaml"
    return parse_matrix_text(Path(path).read_text(), fmt)


def spec_from_args(a: argparse.Namespace) -> Any:
    """A MatrixSpec from a file (flags given explicitly override its top level) or flags."""
    from .logic import MatrixSpec

    flags = {k: getattr(a, k) for k in ("codec", "preset", "resolution", "bitrate_kbps", "crf",
                                         "qp", "streams", "fps", "duration_s", "repetitions",
                                         "idle_s", "warmup_s", "cooldown_s", "output",
                                         "run_id", "source")
             if getattr(a, k, None) is not None}
    if a.realtime:
        flags["realtime"] = True
    if a.matrix:
        spec = load_matrix_file(a.matrix)
        return MatrixSpec.model_validate({**spec.model_dump(exclude_unset=True), **flags})
    if "source" in flags and a.lavfi:
        flags["source"] = "lavfi:" + flags["source"]
    return MatrixSpec.model_validate(flags)


def cmd_runner(a: argparse.Namespace) -> int:
    from schemas.scenario_events import ScenarioFinished
    from shared.ffmpeg import natural_clip
    from shared.service import setup_logging

    from .app import run_matrix
    from .logic import resolve_source

    setup_logging("INFO")
    try:
        spec = spec_from_args(a)
    except (ValidationError, ValueError, OSError) as e:
        print(f"bad matrix: {e}", file=sys.stderr)
        return 2
    run_id = spec.run_id or ("run" + uuid.uuid4().hex[:8])
    natural = natural_clip() if spec.source == "natural" else ""
    source, lavfi = resolve_source(spec.source, natural)
    try:
        scenarios = spec.scenarios(run_id, spec.source if lavfi else source)
    except (ValidationError, ValueError) as e:
        print(f"bad matrix: {e}", file=sys.stderr)
        return 2
    if a.dry_run:
        for sc in scenarios:
            print(sc.scenario_id, sc.settings.model_dump_json(exclude_defaults=True))
        return 0
    failed = [0]

    def progress(i: int, n: int, sc: Any, ev: Any) -> None:
        if isinstance(ev, ScenarioFinished):
            print(f"[{i}/{n}] {sc.scenario_id}: finished, {ev.frames} frames, "
                  f"{ev.cpu_s:.2f} CPU-s, {ev.achieved_fps or 0:.1f} fps", flush=True)
        else:
            failed[0] += 1
            print(f"[{i}/{n}] {sc.scenario_id}: FAILED exit {ev.exit_code}: "
                  f"{ev.stderr_tail.strip().splitlines()[-1:] }", flush=True)

    async def go(pub: Any) -> None:
        await run_matrix(pub, scenarios, source, Path(a.out_dir), run_id, idle_s=spec.idle_s,
                         cooldown_s=spec.cooldown_s, lavfi=lavfi, progress=progress,
                         warmup_s=spec.warmup_s, live_output=spec.output)

    _publisher_session(go)
    print(f"run {run_id}: {len(scenarios) - failed[0]} finished, {failed[0]} failed")
    return 0 if failed[0] == 0 else 1


def cmd_idle(a: argparse.Namespace) -> int:
    from .app import run_idle

    run_id = a.run_id or ("idle" + uuid.uuid4().hex[:8])

    async def go(pub: Any) -> None:
        ev = await run_idle(pub, a.seconds, run_id)
        print(f"idle baseline {ev.scenario_id} on {ev.host}: {ev.wall_s:.1f} s published")

    _publisher_session(go)
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("runner", help="run an encoding matrix with ffmpeg → scenario.events",
                       description=__doc__)
    r.add_argument("--matrix", help="YAML or TOML matrix file (see docs/runner.md)")
    r.add_argument("--codec", nargs="+",
                   help="libx264 libx265 libsvtav1 libvpx-vp9 libaom-av1 (default libx264)")
    r.add_argument("--preset", nargs="+", help="default veryfast")
    r.add_argument("--resolution", nargs="+", help="WxH, default 1280x720")
    r.add_argument("--bitrate", dest="bitrate_kbps", nargs="*", type=float,
                   help="CBR kbit/s (default 1500 when no rate is given)")
    r.add_argument("--crf", nargs="*", type=float)
    r.add_argument("--qp", nargs="*", type=float)
    r.add_argument("--fps", type=float)
    r.add_argument("--duration", dest="duration_s", type=float, help="seconds of content")
    r.add_argument("--streams", nargs="+", type=int, help="concurrent encodes per scenario")
    r.add_argument("--repetitions", type=int)
    r.add_argument("--source",
                   help="'natural' (bundled clip, default), lavfi:<graph>, or a file path")
    r.add_argument("--lavfi", action="store_true", help="--source is a lavfi graph")
    r.add_argument("--idle", dest="idle_s", type=float,
                   help="idle baseline seconds before the matrix (default 10; 0 = none)")
    r.add_argument("--warmup", dest="warmup_s", type=float, help="unrecorded warm-up seconds")
    r.add_argument("--cooldown", dest="cooldown_s", type=float, help="rest after each scenario")
    r.add_argument("--realtime", action="store_true", help="encode at 1x speed (-re)")
    r.add_argument("--output", help="realtime output: rtmp://…, srt://… or a file; {id} and "
                                    "{stream} are replaced")
    r.add_argument("--out-dir", default=os.path.join("joulestream-data", "encodes"))
    r.add_argument("--run-id")
    r.add_argument("--dry-run", action="store_true", help="print the scenarios and exit")
    r.set_defaults(fn=cmd_runner)
    rs = r.add_subparsers(dest="runner_cmd")
    i = rs.add_parser("idle", help="measure an idle baseline of this host now")
    i.add_argument("--seconds", type=float, default=30.0)
    i.add_argument("--run-id")
    i.set_defaults(fn=cmd_idle)
