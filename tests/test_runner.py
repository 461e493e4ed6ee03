"""Runner: matrix files, commands, and real ffmpeg encodes publishing through the broker —
a failed encode is an event, realtime runs at 1x, third-party tools use ScenarioClient."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import scenario_events
from schemas.scenario_events import (
    EncodeSettings,
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
    parse_scenario_event,
)
from services.runner.api import ScenarioClient
from services.runner.app import Publisher, run_matrix
from services.runner.logic import (
    build_matrix,
    encode_command,
    parse_matrix_text,
    resolve_source,
)
from shared.kafka import make_producer
from shared.settings import KafkaSettings
from tests.kafka_helpers import read_records

ROOT = Path(__file__).resolve().parents[1]
Event = ScenarioStarted | ScenarioFinished | ScenarioFailed


# ---- pure ---------------------------------------------------------------------------------

def test_example_matrix_files_parse_into_the_documented_scenarios() -> None:
    spec = parse_matrix_text((ROOT / "examples" / "matrix.yaml").read_text(), "yaml")
    sc = spec.scenarios("r", "clip.mp4")
    # x264 2 presets x 2 rates, x265 1, svt 2 presets x 2 stream counts, vp9 1, aom 1;
    # each x 2 resolutions x 2 repetitions
    assert len(sc) == (4 + 1 + 4 + 1 + 1) * 2 * 2
    assert len({s.scenario_id for s in sc}) == len(sc)
    by_codec = {s.settings.codec for s in sc}
    assert by_codec == {"libx264", "libx265", "libsvtav1", "libvpx-vp9", "libaom-av1"}
    aom = next(s.settings for s in sc if s.settings.codec == "libaom-av1")
    assert aom.qp == 40 and aom.preset == "8" and aom.rate_control == "qp"
    assert {s.settings.streams for s in sc if s.settings.codec == "libsvtav1"} == {1, 2}
    assert spec.idle_s == 10 and spec.warmup_s == 2 and spec.cooldown_s == 2
    toml = parse_matrix_text((ROOT / "examples" / "matrix.toml").read_text(), "toml")
    assert resolve_source(toml.source, "nat.mp4") == ("testsrc2=size=1280x720:rate=25", True)
    assert len(toml.scenarios("r", "x")) == 5


@pytest.mark.parametrize("text,match", [
    ("codec: libx264\nbogus: 1\n", "bogus"),
    ("realtime: false\noutput: rtmp://x/live\n", "realtime"),
    ("matrix:\n  - codec: libfoo\n    crf: 20\n", "unknown encoder"),
    ("duration_s: -1\n", "duration_s"),
])
def test_bad_matrix_files_are_rejected_with_the_reason(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_matrix_text(text, "yaml").scenarios("r", "x")


def test_commands_for_qp_realtime_and_live_outputs() -> None:
    s = EncodeSettings(codec="libx264", preset="fast", qp=30, duration_s=2, realtime=True)
    cmd = encode_command("ffmpeg", "in.mp4", s, "rtmp://media/live/key")
    assert "-re" in cmd and cmd[cmd.index("-qp") + 1] == "30"
    assert cmd[-3:] == ["-f", "flv", "rtmp://media/live/key"]
    srt = encode_command("ffmpeg", "in.mp4", s, "srt://media:9000?streamid=x")
    assert srt[-3:-1] == ["-f", "mpegts"]
    assert encode_command("ffmpeg", "in.mp4", s, "out.ts")[-1] == "out.ts"


# ---- through the broker with real ffmpeg ----------------------------------------------------

async def read_events(kafka: KafkaSettings, n: int, timeout_s: float = 30) -> list[Event]:
    topic = scenario_events.TOPIC
    found = await read_records(kafka, [topic], lambda f: len(f[topic]) >= n, timeout_s)
    return [parse_scenario_event(r.value or b"") for r in found[topic]]


LAVFI = "testsrc2=size=320x180:rate=25"


def sizes(*paths: str | Path) -> int:
    """Total size of files, bytes (sync helper: tests only)."""
    return sum(os.path.getsize(p) for p in paths)


@pytest.mark.integration
async def test_a_failed_encode_is_an_event_and_the_matrix_goes_on(kafka: KafkaSettings,
                                                                   tmp_path: Path) -> None:
    good = build_matrix("rt1", ["libx264"], ["ultrafast"], ["160x90"], [200], [], 25, 1.0,
                        [1], f"lavfi:{LAVFI}")
    bad = build_matrix("rt1", ["libx264"], ["no-such-preset"], ["160x90"], [200], [], 25, 1.0,
                       [1], f"lavfi:{LAVFI}", start_index=1)
    producer = make_producer(kafka)
    await producer.start()
    try:
        pub = Publisher(producer, "hostR", kafka.topic(scenario_events.TOPIC))
        done = await run_matrix(pub, [*bad, *good], LAVFI, tmp_path, "rt1", lavfi=True,
                                warmup_s=0.5)
    finally:
        await producer.stop()
    assert [e.kind for e in done] == ["failed", "finished"]
    evs = await read_events(kafka, 4)
    kinds = {(e.scenario_id, e.kind) for e in evs}
    assert kinds == {(bad[0].scenario_id, "started"), (bad[0].scenario_id, "failed"),
                     (good[0].scenario_id, "started"), (good[0].scenario_id, "finished")}
    failed = next(e for e in evs if isinstance(e, ScenarioFailed))
    assert failed.exit_code not in (0, None) and "no-such-preset" in failed.stderr_tail
    fin = next(e for e in evs if isinstance(e, ScenarioFinished))
    st = next(e for e in evs if isinstance(e, ScenarioStarted) and e.scenario_id == fin.scenario_id)
    assert st.pid == os.getpid() and st.start_mono_ns is not None and st.host == "hostR"
    assert fin.frames == 25 and fin.cpu_s > 0 and fin.peak_rss_bytes and fin.peak_rss_bytes > 1e6
    assert fin.output_bytes and fin.output_path
    assert sizes(fin.output_path) == fin.output_bytes
    assert fin.output_bitrate_kbps == pytest.approx(fin.output_bytes * 8 / 1000 / 1.0)
    assert fin.achieved_fps and fin.achieved_fps > 0
    assert fin.ffmpeg_version and fin.ffmpeg_version.startswith("ffmpeg")
    assert fin.end_mono_ns and fin.start_mono_ns and fin.end_mono_ns > fin.start_mono_ns


@pytest.mark.integration
async def test_realtime_mode_encodes_at_1x_to_a_live_output(kafka: KafkaSettings,
                                                            tmp_path: Path) -> None:
    sc = build_matrix("live1", ["libx264"], ["ultrafast"], ["160x90"], [200], [], 25, 2.0, [2],
                      f"lavfi:{LAVFI}", realtime=True)
    producer = make_producer(kafka)
    await producer.start()
    try:
        pub = Publisher(producer, "hostR", kafka.topic(scenario_events.TOPIC))
        (ev,) = await run_matrix(pub, sc, LAVFI, tmp_path, "live1", lavfi=True,
                                 live_output=str(tmp_path / "live" / "{id}.ts"))
    finally:
        await producer.stop()
    assert isinstance(ev, ScenarioFinished), getattr(ev, "stderr_tail", "")
    assert ev.settings.realtime and ev.frames == 2 * 50
    # -re paces input at its native rate: 2 s of content takes ~2 s of wall time (ffmpeg
    # reads ~0.5 s ahead at the start); unpaced, this tiny encode takes ~0.2 s
    assert ev.wall_s >= 1.3
    assert ev.achieved_fps is not None and ev.achieved_fps < 2 * 25 * 1.5  # unpaced: ~500
    live = tmp_path / "live"
    files = sorted(os.listdir(live))
    assert files == [f"{sc[0].scenario_id}-s0.ts", f"{sc[0].scenario_id}-s1.ts"]
    assert ev.output_bytes == sizes(*(live / f for f in files))


@pytest.mark.integration
async def test_scenario_client_publishes_started_finished_failed(kafka: KafkaSettings) -> None:
    settings = EncodeSettings(codec="libx264", preset="medium", crf=23, duration_s=1)
    async with ScenarioClient(kafka, host="tool-host", run_id="ext1") as client:
        async with client.scenario("ext-ok", settings) as h:
            sum(i * i for i in range(200_000))  # some CPU work of this process
            h.frames = 25
            h.output_path = "/tmp/out.mkv"
        with pytest.raises(RuntimeError, match="boom"):
            async with client.scenario("ext-bad", settings):
                raise RuntimeError("boom")
        h2 = await client.start("ext-explicit", settings)
        await client.finish(h2, frames=3, cpu_s=1.5, achieved_fps=30.0)
    evs = await read_events(kafka, 6)
    by = {(e.scenario_id, e.kind): e for e in evs}
    ok = by[("ext-ok", "finished")]
    assert isinstance(ok, ScenarioFinished)
    assert ok.frames == 25 and ok.cpu_s > 0 and ok.host == "tool-host" and ok.run_id == "ext1"
    assert ok.hardware is not None and ok.end_ns >= ok.start_ns
    bad = by[("ext-bad", "failed")]
    assert isinstance(bad, ScenarioFailed) and "RuntimeError: boom" in bad.stderr_tail
    ex = by[("ext-explicit", "finished")]
    assert isinstance(ex, ScenarioFinished) and ex.cpu_s == 1.5 and ex.achieved_fps == 30.0


@pytest.mark.integration
async def test_cli_idle_baseline_on_demand(kafka: KafkaSettings) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "KAFKA_TOPIC_PREFIX": kafka.topic_prefix, "JOULESTREAM_HOST": "idle-host"}
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", "from services.cli import main; main()",
                         "runner", "idle", "--seconds", "0.5", "--run-id", "b1"],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    evs = await read_events(kafka, 2)
    fin = next(e for e in evs if isinstance(e, ScenarioFinished))
    assert fin.settings.is_idle and fin.host == "idle-host" and fin.scenario_id == "b1-idle"
    assert fin.wall_s >= 0.5
