"""quality_worker through the real broker and the shared loop (``shared.kafka.run_worker``):
untrusted paths are dead-lettered while valid events around them are scored, a job longer than
``max_poll_interval_ms`` does not cost the worker its group membership, and two instances
share the load."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry
from test_quality_ffmpeg import finished, make_media

from schemas import quality_results, scenario_events
from schemas.dead_letters import DeadLetter, dlq_topic
from schemas.quality_results import QualityResult
from services.quality_worker.app import QualityProcessor
from services.quality_worker.config import QualityConfig
from shared.ffmpeg import ffmpeg_exe
from shared.httpserver import Health
from shared.kafka import BadInput, StopSignal, make_consumer, make_producer, run_worker
from shared.settings import KafkaSettings

DLQ = dlq_topic(scenario_events.TOPIC)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("qworker") / "media")


class Recording(QualityProcessor):
    """The real processor, noting the partitions taken away from it (a rebalance)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.revoked: list[set[TopicPartition]] = []

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            self.revoked.append(set(partitions))
        super().on_revoked(partitions)


async def publish(kafka: KafkaSettings, messages: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(kafka.topic(scenario_events.TOPIC), value, key=key)
    finally:
        await producer.stop()


async def collect(kafka: KafkaSettings, done: Callable[[dict[str, list[bytes]]], bool],
                  timeout_s: float, tasks: list[asyncio.Task[None]]) -> dict[str, list[bytes]]:
    c = make_consumer(kafka, None, [kafka.topic(quality_results.TOPIC), kafka.topic(DLQ)])
    await c.start()
    found: dict[str, list[bytes]] = {quality_results.TOPIC: [], DLQ: []}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(found):
            for t in tasks:
                if t.done():
                    raise AssertionError(f"a worker stopped: {t.exception()!r}")
            assert loop.time() < deadline, {k: len(v) for k, v in found.items()}
            for tp, recs in (await c.getmany(timeout_ms=300)).items():
                found[kafka.logical(tp.topic)].extend(r.value for r in recs if r.value)
    finally:
        await c.stop()
    return found


async def committed(kafka: KafkaSettings, group: str) -> int:
    """Sum of the group's committed offsets on scenario.events (a consumer that does not
    join the group: the embedded broker's admin API cannot list group offsets)."""
    c = make_consumer(kafka, group)
    await c.start()
    try:
        topic = kafka.topic(scenario_events.TOPIC)
        offs = [await c.committed(TopicPartition(topic, p)) for p in range(kafka.partitions)]
    finally:
        await c.stop()
    return sum(o for o in offs if o)


async def stop_all(stop: StopSignal, tasks: list[asyncio.Task[None]],
                   procs: list[QualityProcessor]) -> None:
    stop.set()
    for t in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(t, 30)
    for p in procs:
        await p.close()


def start(kafka: KafkaSettings, proc: QualityProcessor, group: str, stop: StopSignal,
          **overrides: Any) -> asyncio.Task[None]:
    return asyncio.create_task(run_worker(
        proc, kafka, group, CollectorRegistry(), Health(), stop, max_records=1,
        consumer_overrides=overrides or None))


async def test_untrusted_paths_dead_lettered_valid_events_around_them_scored(
        kafka: KafkaSettings, media: dict[str, Path], tmp_path: Path) -> None:
    root = media["nat_ref"].parent
    outside = tmp_path / "outside.mkv"
    outside.write_bytes(media["nat_lo"].read_bytes())
    link = root / "escape-link.mkv"
    if not link.exists():
        os.symlink(outside, link)
    garbage = root / "garbage.mkv"
    garbage.write_bytes(b"not a video at all" * 100)
    ref = media["nat_ref"]

    def ev(dist: str, sid: str, ref_path: str = str(ref)) -> bytes:
        e = finished(media["nat_lo"], ref, sid)
        return e.model_copy(update={"output_path": dist, "reference_path": ref_path}).to_bytes()

    bad = {
        "dotdot": ev(f"{root}/../{outside.parent.name}/outside.mkv", "dotdot"),
        "symlink": ev(str(link), "symlink"),
        "abs-outside": ev(str(outside), "abs"),
        "ref-outside": ev(str(media["nat_lo"]), "refout", "/etc/passwd"),
        "missing": ev(str(root / "nope.mkv"), "missing"),
        "directory": ev(str(root), "dir"),
        "garbage": ev(str(garbage), "garbage"),
        "schema": b'{"kind": "finished", "scenario_id": "x"}',
    }
    msgs = [(b"h1", ev(str(media["nat_lo"]), "good-1"))]
    msgs += [(b"h1", v) for v in bad.values()]
    msgs += [(b"h1", ev(str(media["nat_hi"]), "good-2"))]
    proc = QualityProcessor(CollectorRegistry(), QualityConfig(
        media_roots=[str(root)], out_dir=str(tmp_path / "q"), threads=2))
    stop = StopSignal()
    task = start(kafka, proc, "g-q-paths", stop)
    try:
        await publish(kafka, msgs)
        found = await collect(kafka, lambda f: len(f[quality_results.TOPIC]) >= 2
                              and len(f[DLQ]) >= len(bad), 90, [task])
        await asyncio.sleep(1.0)  # the loop commits after delivering
        assert await committed(kafka, "g-q-paths") == len(msgs)
    finally:
        await stop_all(stop, [task], [proc])
    results = {r.scenario_id: r for r in map(QualityResult.from_bytes,
                                             found[quality_results.TOPIC])}
    assert set(results) == {"good-1", "good-2"}
    assert results["good-2"].vmaf > results["good-1"].vmaf
    dls = [DeadLetter.from_bytes(v) for v in found[DLQ]]
    assert len(dls) == len(bad)
    by_value = {base64.b64decode(d.value_b64): d for d in dls}
    expect = {"dotdot": "unsafe_path", "symlink": "unsafe_path", "abs-outside": "unsafe_path",
              "ref-outside": "unsafe_path", "missing": "missing_file",
              "directory": "missing_file", "garbage": "unreadable", "schema": "schema"}
    for name, value in bad.items():
        d = by_value[value]
        assert d.error_type == expect[name], (name, d.reason)
        assert d.service == "quality_worker" and d.reason
    assert "outside the configured media roots" in by_value[bad["symlink"]].reason
    # the reason says what was wrong without echoing where the file really points
    assert str(outside) not in by_value[bad["symlink"]].reason
    assert proc.metrics.failures.labels("unsafe_path")._value.get() == 4


def slow_ffmpeg(path: Path, delay_s: float, calls: Path) -> Path:
    """The real ffmpeg, but each libvmaf run starts ``delay_s`` late: a job longer than the
    consumer's max_poll_interval without burning CPU on 2 busy cores."""
    path.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *libvmaf*) echo run >> "{calls}"; sleep {delay_s};; esac\n'
        f'exec "{ffmpeg_exe()}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


async def test_a_job_over_its_timeout_is_killed_and_dead_lettered(
        media: dict[str, Path], tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    cfg = QualityConfig(media_roots=[str(media["nat_ref"].parent)], out_dir=str(tmp_path / "q"),
                        threads=1, timeout_s=0.5,
                        ffmpeg=str(slow_ffmpeg(tmp_path / "ff.sh", 30.0, calls)))
    proc = QualityProcessor(CollectorRegistry(), cfg)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(BadInput) as e:
        await proc.score(finished(media["nat_lo"], media["nat_ref"]))
    assert e.value.error_type == "timeout" and loop.time() - t0 < 10
    assert proc.metrics.in_flight._value.get() == 0
    assert proc.metrics.failures.labels("timeout")._value.get() == 1


async def test_job_longer_than_max_poll_interval_keeps_group_membership(
        kafka: KafkaSettings, media: dict[str, Path], tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    cfg = QualityConfig(media_roots=[str(media["nat_ref"].parent)], out_dir=str(tmp_path / "q"),
                        threads=2, ffmpeg=str(slow_ffmpeg(tmp_path / "ff.sh", 5.0, calls)))
    proc = Recording(CollectorRegistry(), cfg)
    stop = StopSignal()
    # max_poll_interval 2 s; each job takes > 5 s
    task = start(kafka, proc, "g-q-long", stop, max_poll_interval_ms=2000,
                 session_timeout_ms=10_000, heartbeat_interval_ms=500)
    msgs = [(b"h1", finished(media["nat_lo"], media["nat_ref"], f"long-{i}").to_bytes())
            for i in range(2)]
    try:
        await publish(kafka, msgs)
        found = await collect(kafka, lambda f: len(f[quality_results.TOPIC]) >= 2, 90, [task])
        await asyncio.sleep(1.5)
        assert await committed(kafka, "g-q-long") == len(msgs)
    finally:
        await stop_all(stop, [task], [proc])
    assert proc.revoked == []  # never kicked out of the group while scoring
    assert calls.read_text().count("run") == 2  # each event scored once: nothing replayed
    assert {QualityResult.from_bytes(v).scenario_id for v in found[quality_results.TOPIC]} == {
        "long-0", "long-1"}


def keys_per_partition(partitions: int, per: int) -> list[bytes]:
    """Keys that the producer's default partitioner spreads ``per`` to every partition."""
    part = DefaultPartitioner()
    keys: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per for v in keys.values()):
        k = f"host-{i}".encode()
        p = part(k, list(range(partitions)), list(range(partitions)))
        if len(keys[p]) < per:
            keys[p].append(k)
        i += 1
    return [k for v in keys.values() for k in v]


async def test_two_instances_share_the_load(
        kafka: KafkaSettings, media: dict[str, Path], tmp_path: Path) -> None:
    root = str(media["nat_ref"].parent)
    procs = [Recording(CollectorRegistry(), QualityConfig(
        media_roots=[root], out_dir=str(tmp_path / f"q{i}"), threads=1)) for i in range(2)]
    stop = StopSignal()
    tasks = [start(kafka, procs[0], "g-q-shared", stop)]
    try:
        # the first instance is in the group and scoring ...
        await publish(kafka, [(b"warm", finished(media["pat_lo"], media["pat_ref"],
                                                 "warm-up").to_bytes())])
        await collect(kafka, lambda f: len(f[quality_results.TOPIC]) >= 1, 60, tasks)
        # ... then a second joins: the group rebalances and the partitions are split
        tasks.append(start(kafka, procs[1], "g-q-shared", stop))
        for _ in range(300):
            if procs[0].revoked:
                break
            await asyncio.sleep(0.1)
        assert procs[0].revoked, "the second instance never joined the group"
        before = [p.metrics.jobs._value.get() for p in procs]
        keys = keys_per_partition(kafka.partitions, 2)
        msgs = [(k, finished(media["pat_lo"], media["pat_ref"], f"shared-{i}").to_bytes())
                for i, k in enumerate(keys)]
        await publish(kafka, msgs)
        want = {f"shared-{i}" for i in range(len(keys))}
        found = await collect(kafka, lambda f: want <= {
            QualityResult.from_bytes(v).scenario_id for v in f[quality_results.TOPIC]},
            120, tasks)
    finally:
        await stop_all(stop, tasks, procs)
    assert want <= {QualityResult.from_bytes(v).scenario_id for v in found[quality_results.TOPIC]}
    jobs = [p.metrics.jobs._value.get() - b for p, b in zip(procs, before, strict=True)]
    assert all(j >= 1 for j in jobs), jobs  # both instances scored a share
    assert sum(jobs) >= len(keys)
