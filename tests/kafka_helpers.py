"""Reading what the services produced, for assertions: topics of a test's namespace, every
partition, from the beginning, without joining a consumer group."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from shared.kafka import make_consumer
from shared.settings import KafkaSettings

Found = dict[str, list[ConsumerRecord]]


async def read_records(kafka: KafkaSettings, topics: list[str], until: Callable[[Found], bool],
                       timeout_s: float, poll_ms: int = 200) -> Found:
    """Records of ``topics`` (logical names) until ``until(found)`` holds; fails the test
    with what was found when ``timeout_s`` passes first."""
    c = make_consumer(kafka, None)
    await c.start()
    found: Found = {t: [] for t in topics}
    try:
        parts = [TopicPartition(kafka.topic(t), p) for t in topics
                 for p in range(kafka.partitions)]
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        while not until(found):
            have = {k: len(v) for k, v in found.items()}
            assert time.monotonic() < deadline, f"timed out after {timeout_s}s; have {have}"
            for tp, recs in (await c.getmany(timeout_ms=poll_ms)).items():
                found[kafka.logical(tp.topic)].extend(recs)
    finally:
        await c.stop()
    return found


def values(found: Found) -> dict[str, list[bytes]]:
    return {t: [r.value or b"" for r in recs] for t, recs in found.items()}
