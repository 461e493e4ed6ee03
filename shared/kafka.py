"""Kafka adapters: topic creation, producer, and the one consume → process → produce → commit loop.

Failure semantics (the same for every worker):

* A message the processor rejects (``BadInput``: malformed, wrong version, unsafe path, …)
  goes to ``<topic>.dlq`` with the original bytes, its coordinates and the reason; the
  worker keeps going.
* Outputs of a batch are produced and **acknowledged** before any offset is committed, so a
  crash at any point replays from the last commit (at-least-once).  Output keys derive from
  inputs, so a replay rewrites the same records (idempotent downstream).
* A stateful processor (the energy join) tells the loop which offsets are safe to commit:
  nothing still needed to rebuild its state after a restart is ever committed past.
* Any other exception stops the loop without committing; restart replays.
* SIGTERM/SIGINT: the batch in hand is finished, its outputs flushed and committed, then
  the consumer leaves the group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas import TOPICS
from schemas.dead_letters import SUFFIX as DLQ_SUFFIX
from schemas.dead_letters import DeadLetter, dlq_topic

from .httpserver import Health
from .settings import KafkaSettings

log = logging.getLogger(__name__)


#: error types every worker can dead-letter with (processors may add their own)
COMMON_ERROR_TYPES = ("invalid", "schema", "decode")


class BadInput(Exception):
    """The message cannot be accepted; it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str, error_type: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


class Processor(Protocol):
    """What a worker plugs into :func:`run_worker`."""

    name: str
    input_topics: Sequence[str]

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        """Process one record; raise :class:`BadInput` to dead-letter it."""
        ...

    def tick(self, now_ns: int) -> list[Output]:
        """Called after every poll (also when nothing arrived): timeouts, watermarks."""
        ...

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        """Offsets safe to commit, or None to commit everything handled."""
        ...

    def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


def all_topics() -> list[str]:
    return list(TOPICS)


async def ensure_topics(
    settings: KafkaSettings, topics: Sequence[str] | None = None, with_dlq: bool = True
) -> None:
    """Create the topics joulestream uses (idempotent).  Data topics share one partition
    count so that ``power.samples`` and ``scenario.events`` are co-partitioned by host."""
    names = list(topics or all_topics())
    if with_dlq:
        names += [dlq_topic(t) for t in names if not t.endswith(".dlq")]
    admin = AIOKafkaAdminClient(**settings.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(settings.topic(t), settings.partitions, settings.replication_factor)
            for t in names
            if settings.topic(t) not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    kw: dict[str, Any] = {
        **settings.client_kwargs(),
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": 8 * 1024 * 1024,
    }
    kw.update(overrides)
    return AIOKafkaProducer(**kw)


def make_consumer(
    settings: KafkaSettings, group_id: str | None, topics: Sequence[str] = (), **overrides: Any
) -> AIOKafkaConsumer:
    kw: dict[str, Any] = {
        **settings.client_kwargs(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        # range assignment keeps co-partitioned topics together (the join needs it)
        "partition_assignment_strategy": (RangePartitionAssignor,),
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": min(3_000, settings.session_timeout_ms // 3),
        "max_poll_interval_ms": 900_000,
    }
    kw.update(overrides)
    return AIOKafkaConsumer(*topics, **kw)


class WorkerMetrics:
    """The loop's own metrics: ``joulestream_<service>_…``."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        p = f"joulestream_{service}"
        self.consumed = Counter(
            f"{p}_messages_consumed_total", "Messages consumed", ["topic"], registry=registry
        )
        self.produced = Counter(
            f"{p}_messages_produced_total", "Messages produced", ["topic"], registry=registry
        )
        self.dead_letters = Counter(
            f"{p}_dead_letters_total",
            "Messages sent to a dead-letter topic",
            ["topic", "error_type"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_processing_seconds",
            "Time to process one polled batch, produce its outputs and commit",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.lag = Gauge(
            f"{p}_consumer_lag_messages",
            "High-water mark minus position, per assigned partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.last_commit = Gauge(
            f"{p}_last_commit_timestamp_seconds", "Unix time of the last commit", registry=registry
        )
        self.up = Gauge(f"{p}_up", "1 while the worker loop runs and is ready", registry=registry)


def dead_letter(record: ConsumerRecord, service: str, err: BadInput) -> Output:
    dl = DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
        value_b64=base64.b64encode(record.value or b"").decode(),
        reason=err.reason[:8000],
        error_type=err.error_type,
        service=service,
        ts_ns=time.time_ns(),
    )
    return Output(dlq_topic(record.topic), record.key, dl.to_bytes())


class StopSignal:
    """Set by SIGTERM/SIGINT (or by code); the loop finishes its batch and stops."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.event.set)

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def _count_dead_letters(outputs: Sequence[Output], metrics: WorkerMetrics) -> None:
    """Dead letters a processor emits itself (outside ``handle``) count like the others."""
    for o in outputs:
        if o.topic.endswith(DLQ_SUFFIX):
            try:
                dl = DeadLetter.from_bytes(o.value)
            except Exception:  # not ours to judge: count it under the topic name alone
                metrics.dead_letters.labels(o.topic[: -len(DLQ_SUFFIX)], "invalid").inc()
            else:
                metrics.dead_letters.labels(dl.source_topic, dl.error_type).inc()


async def _lags(consumer: AIOKafkaConsumer, settings: KafkaSettings
                ) -> dict[TopicPartition, int]:
    """Unread messages per assigned partition (logical topic names); partitions whose
    high-water mark is not known yet are left out (unknown)."""
    out: dict[TopicPartition, int] = {}
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        with contextlib.suppress(Exception):
            out[TopicPartition(settings.logical(tp.topic), tp.partition)] = max(
                0, hw - await consumer.position(tp))
    return out


def _transient(e: BaseException) -> bool:
    """Broker-side trouble worth waiting out (connection loss, leader moves, timeouts)."""
    return isinstance(e, KafkaTimeoutError | OSError) or bool(getattr(e, "retriable", False))


async def _deliver(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    processor: Processor,
    outputs: list[Output],
    consumed: dict[TopicPartition, int],
    settings: KafkaSettings,
    metrics: WorkerMetrics,
    health: Health,
    stop: StopSignal,
) -> bool:
    """Produce the batch's outputs (acknowledged), then commit what is safe.

    Transient broker errors are retried with capped backoff while the service reports
    not-ready; outputs are idempotent by key, so re-sending after a partial failure is safe.
    Returns False if stopped before the batch was delivered (nothing committed)."""
    delay = 0.2
    sent = False
    while True:
        try:
            if not sent:
                await produce_all(producer, outputs, metrics, settings)
                sent = True
            safe = processor.safe_offsets()
            if safe is not None:  # the processor speaks logical topic names
                safe = {TopicPartition(settings.topic(tp.topic), tp.partition): o
                        for tp, o in safe.items()}
            to_commit = consumed if safe is None else safe
            assigned = consumer.assignment()
            to_commit = {tp: o for tp, o in to_commit.items() if tp in assigned}
            if to_commit:
                try:
                    await consumer.commit(to_commit)
                except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as e:
                    # partitions moved to another member: it re-reads from the last commit
                    # and, outputs being idempotent, rewrites the same records
                    log.warning("commit skipped (%s): partitions were reassigned", e)
                else:
                    metrics.last_commit.set(time.time())
            if not health.ready:
                health.set(True, "consuming")
            return True
        except Exception as e:
            if not _transient(e):
                raise
            log.warning("broker unavailable (%s); retrying in %.1fs", e, delay)
            health.set(False, f"broker unavailable: {e}")
            metrics.up.set(0)
            try:
                await asyncio.wait_for(stop.event.wait(), delay)
                return False
            except TimeoutError:
                pass
            metrics.up.set(1)
            delay = min(delay * 2, 10.0)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: Processor, settings: KafkaSettings) -> None:
        self.processor = processor
        self.settings = settings
        #: partitions revoked since the loop last cleared this (logical names)
        self.revoked: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        logical = {TopicPartition(self.settings.logical(tp.topic), tp.partition)
                   for tp in revoked}
        self.revoked |= logical
        self.processor.on_revoked(logical)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


async def produce_all(
    producer: AIOKafkaProducer,
    outputs: Sequence[Output],
    metrics: WorkerMetrics | None = None,
    settings: KafkaSettings | None = None,
) -> None:
    """Send every output and wait until the broker acknowledged all of them."""
    futures = []
    for o in outputs:
        topic = settings.topic(o.topic) if settings else o.topic
        futures.append(await producer.send(topic, o.value, key=o.key))
        if metrics:
            metrics.produced.labels(o.topic).inc()
    if futures:
        await asyncio.gather(*futures)


async def with_retry(
    what: str,
    fn: Callable[[], Awaitable[Any]],
    stop: StopSignal,
    health: Health | None = None,
    max_backoff_s: float = 10.0,
) -> bool:
    """Call ``fn`` until it succeeds, with capped exponential backoff; False if stopped."""
    delay = 0.2
    while not stop.is_set():
        try:
            await fn()
            return True
        except (KafkaError, OSError) as e:
            log.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
            if health:
                health.set(False, f"{what}: {e}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.event.wait(), delay)
            delay = min(delay * 2, max_backoff_s)
    return False


#: with nothing consumed for this long, the loop checks that the broker still answers (a
#: metadata request), so /healthz reports an outage even when no traffic would reveal it
BROKER_PROBE_S = 2.0


async def _probe_broker(
    consumer: AIOKafkaConsumer, metrics: WorkerMetrics, health: Health, stop: StopSignal
) -> bool:
    """Wait (capped backoff, not ready meanwhile) until the broker answers; False if stopped."""
    async def probe() -> None:
        try:
            await consumer.topics()
        except (KafkaError, OSError):
            metrics.up.set(0)
            raise

    ok = await with_retry("broker check", probe, stop, health)
    if ok and not health.ready:
        log.info("broker reachable again")
        health.set(True, "consuming")
    metrics.up.set(1 if health.ready else 0)
    return ok


async def run_worker(
    processor: Processor,
    settings: KafkaSettings,
    group_id: str,
    registry: CollectorRegistry,
    health: Health,
    stop: StopSignal,
    max_records: int = 500,
    poll_timeout_ms: int = 200,
    consumer_overrides: dict[str, Any] | None = None,
) -> None:
    """The shared loop: consume → decode/process → produce (acked) → commit."""
    metrics = WorkerMetrics(processor.name, registry)
    for t in processor.input_topics:
        metrics.consumed.labels(t)
        for kind in COMMON_ERROR_TYPES:  # present at zero, so increase() sees the first one
            metrics.dead_letters.labels(t, kind)
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id, **(consumer_overrides or {}))
    rebalance = _Rebalance(processor, settings)
    consumer.subscribe([settings.topic(t) for t in processor.input_topics], listener=rebalance)
    health.set(False, "connecting to the broker")
    if not await with_retry("producer start", producer.start, stop, health):
        return
    try:
        if not await with_retry("consumer start", consumer.start, stop, health):
            return
        health.set(True, "consuming", group=group_id, topics=list(processor.input_topics))
        metrics.up.set(1)
        last_contact = time.monotonic()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=poll_timeout_ms, max_records=max_records)
            rebalance.revoked.clear()  # what getmany returned belongs to the new assignment
            if batch:
                last_contact = time.monotonic()
            elif time.monotonic() - last_contact > BROKER_PROBE_S:
                if not await _probe_broker(consumer, metrics, health, stop):
                    break
                last_contact = time.monotonic()
            t0 = time.perf_counter()
            outputs: list[Output] = []
            consumed: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                logical = settings.logical(tp.topic)
                for record in records:
                    if settings.topic_prefix:
                        record = dataclasses.replace(record, topic=logical)
                    metrics.consumed.labels(logical).inc()
                    try:
                        outputs.extend(await processor.handle(record))
                    except BadInput as e:
                        log.warning(
                            "dead-lettering %s[%d]@%d: %s",
                            tp.topic, tp.partition, record.offset, e.reason,
                        )
                        metrics.dead_letters.labels(logical, e.error_type).inc()
                        outputs.append(dead_letter(record, processor.name, e))
                    consumed[tp] = record.offset + 1
            if rebalance.revoked:
                # A rebalance ran while this batch was processed (handle awaited): the state
                # dropped for the revoked partitions was partly rebuilt from the batch's tail.
                # Drop it again and deliver and commit nothing: the new assignment re-reads
                # from the last commit, so the batch is processed again, whole.
                processor.on_revoked(set(rebalance.revoked))
                log.info("rebalance during a batch: its %d records will be re-read",
                         sum(len(r) for r in batch.values()))
                continue
            on_lag = getattr(processor, "on_lag", None)
            if on_lag is not None:  # stateful processors may care how far behind inputs are
                on_lag(await _lags(consumer, settings))
            ticked = processor.tick(time.time_ns())
            _count_dead_letters(ticked, metrics)  # e.g. a scoring job that failed later
            outputs.extend(ticked)
            if not await _deliver(producer, consumer, processor, outputs, consumed, settings,
                                  metrics, health, stop):
                break  # stopped while the broker was unreachable: nothing committed, replay
            for tp, n in (await _lags(consumer, settings)).items():
                metrics.lag.labels(tp.topic, str(tp.partition)).set(n)
            if batch:
                metrics.batch_seconds.observe(time.perf_counter() - t0)
    finally:
        metrics.up.set(0)
        health.set(False, "stopped")
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
