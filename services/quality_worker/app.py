"""quality_worker: for every finished encode, VMAF/PSNR/SSIM against its reference.

Long jobs and the consumer group
--------------------------------
A libvmaf run can take minutes, longer than the consumer's ``max_poll_interval_ms``; a
consumer that does not poll for that long is removed from its group (its partitions move to
another member, which scores the same events again).  So scoring never runs inside
``handle``: ``handle`` validates the event (schema, path safety, file present — bad input is
dead-lettered at once by the shared loop), queues it and returns; jobs run as asyncio tasks
while :func:`shared.kafka.run_worker` keeps polling.  Finished jobs hand their result (or
dead letter) to the loop through ``tick``, and ``safe_offsets`` holds the committed offset of
each partition at its oldest unfinished event, so a crash or a rebalance replays exactly the
events whose results were not yet acknowledged (at-least-once; results are keyed by scenario
id, so a replay rewrites the same record).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from schemas import quality_results, scenario_events
from schemas.quality_results import Pooled, QualityResult
from schemas.scenario_events import ScenarioFinished, parse_scenario_event
from shared.ffmpeg import ffmpeg_exe, ffmpeg_version, probe_video
from shared.kafka import BadInput, Output, dead_letter
from shared.validation import describe_validation_error

from .config import QualityConfig
from .logic import (
    UnsafePath,
    build_command,
    choose_model,
    expected_frames,
    file_stem,
    frame_mismatch,
    neg_model_for,
    parse_vmaf_log,
    safe_media_path,
)

log = logging.getLogger(__name__)

FAILURE_REASONS = ("schema", "decode", "unsafe_path", "missing_file", "unreadable", "ffmpeg",
                   "timeout", "frame_mismatch", "bad_log")
#: distinct (codec, preset) label pairs per histogram; further pairs are counted as "other"
MAX_LABEL_PAIRS = 64


class QualityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "joulestream_quality_worker"
        score_buckets = (20, 40, 60, 70, 80, 85, 90, 93, 95, 97, 99, 100)
        self.vmaf = Histogram(f"{p}_vmaf", "Pooled (mean) VMAF per encode", ["codec", "preset"],
                              buckets=score_buckets, registry=registry)
        self.vmaf_neg = Histogram(f"{p}_vmaf_neg", "Pooled (mean) VMAF NEG per encode",
                                  ["codec", "preset"], buckets=score_buckets, registry=registry)
        self.compute = Histogram(f"{p}_compute_seconds", "Wall time of one libvmaf run",
                                 buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
                                 registry=registry)
        self.speed = Histogram(f"{p}_scoring_frames_per_second",
                               "Frames scored per wall second, per job",
                               buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
                               registry=registry)
        self.frames = Counter(f"{p}_frames_scored_total", "Frames scored", registry=registry)
        self.jobs = Counter(f"{p}_jobs_total", "Scoring jobs started", registry=registry)
        self.in_flight = Gauge(f"{p}_jobs_in_flight", "Scoring jobs running", registry=registry)
        self.queued = Gauge(f"{p}_jobs_queued", "Accepted events waiting for a scoring slot",
                            registry=registry)
        self.failures = Counter(f"{p}_failures_total", "Events dead-lettered, by reason",
                                ["reason"], registry=registry)
        for r in FAILURE_REASONS:
            self.failures.labels(r)
        self._pairs: set[tuple[str, str]] = set()

    def labels(self, codec: str, preset: str) -> tuple[str, str]:
        """Event fields are untrusted: bound the label cardinality."""
        pair = (codec, preset)
        if pair in self._pairs:
            return pair
        if len(self._pairs) < MAX_LABEL_PAIRS:
            self._pairs.add(pair)
            return pair
        return ("other", "other")


@dataclass(eq=False)
class _Job:
    record: ConsumerRecord
    tp: TopicPartition  # logical topic name
    event: ScenarioFinished
    task: asyncio.Task[None] | None = None
    outputs: list[Output] = field(default_factory=list)


class QualityProcessor:
    name = "quality_worker"
    input_topics: Sequence[str] = (scenario_events.TOPIC,)

    def __init__(self, registry: CollectorRegistry, cfg: QualityConfig | None = None) -> None:
        self.cfg = cfg or QualityConfig()
        self.registry = registry
        self.metrics = QualityMetrics(registry)
        self.ffmpeg = self.cfg.ffmpeg or ffmpeg_exe()
        Path(self.cfg.out_dir).mkdir(parents=True, exist_ok=True)
        self._queue: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._finished: list[_Job] = []
        self._pending: dict[TopicPartition, set[int]] = {}  # offsets accepted, not delivered
        self._next: dict[TopicPartition, int] = {}  # offset after the last one handled
        self._crash: BaseException | None = None
        self._slot_freed = asyncio.Event()

    def _fail(self, reason: str, label: str) -> BadInput:
        self.metrics.failures.labels(label).inc()
        return BadInput(reason, label)

    # -- the Processor protocol ------------------------------------------------------------

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        """Validate and queue; never waits for scoring (see the module docstring)."""
        tp = TopicPartition(record.topic, record.partition)
        self._next[tp] = record.offset + 1
        try:
            ev = parse_scenario_event(record.value or b"")
        except ValidationError as e:
            raise self._fail(describe_validation_error(e), "schema") from e
        except (UnicodeDecodeError, ValueError) as e:
            raise self._fail(f"undecodable message: {e}", "decode") from e
        if not isinstance(ev, ScenarioFinished) or ev.settings.is_idle:
            return []
        if not ev.output_path or not ev.reference_path:
            return []  # nothing to score (e.g. a live encode): not an error
        self.check_paths(ev)
        while len(self._queue) >= self.cfg.max_queued:  # back-pressure (rare: see docs)
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._pending.setdefault(tp, set()).add(record.offset)
        self._queue.append(_Job(record, tp, ev))
        self._start_jobs()
        return []

    def tick(self, now_ns: int) -> list[Output]:
        """Outputs of jobs finished since the last call; re-raises a job's unexpected error
        (the loop then stops without committing, and a restart replays)."""
        if self._crash is not None:
            raise self._crash
        out: list[Output] = []
        done, self._finished = self._finished, []
        for job in done:
            out.extend(job.outputs)
            self._pending.get(job.tp, set()).discard(job.record.offset)
        return out

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        """Per partition: the oldest event whose result is not delivered yet, else the next."""
        return {tp: min(self._pending[tp]) if self._pending.get(tp) else nxt
                for tp, nxt in self._next.items()}

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Another member scores these partitions now: drop their queued and running jobs
        (not committed, so the new owner replays them)."""
        for job in [*self._queue, *self._running]:
            if job.tp in partitions:
                if job.task is not None:
                    job.task.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(job)
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
        self.metrics.queued.set(len(self._queue))

    async def close(self) -> None:
        """Cancel queued and running jobs (their events are not committed: replayed later)."""
        self._queue.clear()
        tasks = [j.task for j in self._running if j.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def busy(self) -> bool:
        return bool(self._queue or self._running or self._finished)

    # -- jobs ------------------------------------------------------------------------------

    def _start_jobs(self) -> None:
        while self._queue and len(self._running) < self.cfg.max_jobs:
            job = self._queue.popleft()
            self._running.add(job)
            job.task = asyncio.create_task(self._run(job), name=f"vmaf:{job.event.scenario_id}")
        self.metrics.queued.set(len(self._queue))
        self._slot_freed.set()

    async def _run(self, job: _Job) -> None:
        try:
            try:
                res = await self.score(job.event)
                job.outputs = [Output(quality_results.TOPIC, job.event.scenario_id.encode(),
                                      res.to_bytes())]
            except BadInput as e:
                log.warning("dead-lettering %s[%d]@%d: %s", job.record.topic,
                            job.record.partition, job.record.offset, e.reason)
                job.outputs = [dead_letter(job.record, self.name, e)]
            self._finished.append(job)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # not the event's fault: stop the worker (see tick)
            log.exception("scoring %s failed", job.event.scenario_id)
            self._crash = e
        finally:
            self._running.discard(job)
            self._start_jobs()

    def check_paths(self, ev: ScenarioFinished) -> tuple[Path, Path]:
        """(distorted, reference), both resolved under a media root and readable files."""
        assert ev.output_path and ev.reference_path
        try:
            dist = safe_media_path(ev.output_path, self.cfg.media_roots)
            ref = safe_media_path(ev.reference_path, self.cfg.media_roots)
        except UnsafePath as e:
            raise self._fail(str(e), "unsafe_path") from e
        for p in (dist, ref):
            if not p.is_file() or not os.access(p, os.R_OK):
                raise self._fail(f"file missing or unreadable: {p}", "missing_file")
        return dist, ref

    async def score(self, ev: ScenarioFinished) -> QualityResult:
        """Score one finished encode; :class:`BadInput` when it cannot be scored."""
        dist, ref = self.check_paths(ev)  # again: files may have changed since queueing
        try:
            info, _ = await asyncio.gather(asyncio.to_thread(probe_video, str(ref), self.ffmpeg),
                                           asyncio.to_thread(probe_video, str(dist), self.ffmpeg))
        except ValueError as e:
            raise self._fail(f"not a readable video: {e}", "unreadable") from e
        w, h = int(info["width"]), int(info["height"])
        model = choose_model(self.cfg.vmaf_model, h)
        neg = neg_model_for(model)
        dur = ev.settings.duration_s or None
        fps = ev.settings.fps or info["fps"] or None
        cmd = build_command(self.ffmpeg, str(dist), str(ref), w, h, model, dur,
                            self.cfg.threads, fps, self.cfg.subsample, neg)
        self.metrics.jobs.inc()
        self.metrics.in_flight.inc()
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.cfg.timeout_s)
        except TimeoutError:
            raise self._fail(f"libvmaf timed out after {self.cfg.timeout_s}s",
                             "timeout") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: children too
                await proc.wait()
            self.metrics.in_flight.dec()
        compute_s = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = err.decode(errors="replace")[-1500:]
            raise self._fail(f"ffmpeg/libvmaf exited {proc.returncode}: {tail}", "ffmpeg")
        try:
            parsed = parse_vmaf_log(json.loads(out))
        except ValueError as e:  # JSONDecodeError is a ValueError
            raise self._fail(f"libvmaf log unusable: {e}", "bad_log") from e
        window_s = min(dur, info["duration_s"]) if dur and info["duration_s"] else (
            dur or info["duration_s"])
        expected = expected_frames(window_s, fps) if fps else parsed["frames"]
        why = frame_mismatch(parsed["frames"], self.cfg.subsample, expected,
                             exact_window=dur is not None and dur <= info["duration_s"])
        if why:
            raise self._fail(why, "frame_mismatch")
        per_frame = Path(self.cfg.out_dir) / f"{file_stem(ev.scenario_id)}.frames.json"
        doc = {"scenario_id": ev.scenario_id, "vmaf_model": model, "vmaf_neg_model": neg,
               "libvmaf_version": parsed["version"], "subsample": self.cfg.subsample,
               "frame_rate": fps, **parsed["per_frame"]}
        tmp = per_frame.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(per_frame)
        pooled = {k: Pooled(**v) for k, v in parsed["pooled"].items()}
        speed = parsed["frames"] / compute_s if compute_s > 0 else None
        self.metrics.compute.observe(compute_s)
        self.metrics.frames.inc(parsed["frames"])
        if speed:
            self.metrics.speed.observe(speed)
        ffv = ffmpeg_version(self.ffmpeg)
        res = QualityResult(
            scenario_id=ev.scenario_id, host=ev.host, vmaf=max(0.0, pooled["vmaf"].mean),
            vmaf_neg=max(0.0, pooled["vmaf_neg"].mean) if "vmaf_neg" in pooled else None,
            psnr_y=parsed.get("psnr_y"), psnr_avg=parsed.get("psnr_avg"),
            ssim=pooled["float_ssim"].mean if "float_ssim" in pooled else None,
            pooled=pooled, vmaf_model=model, vmaf_neg_model=neg if "vmaf_neg" in pooled else None,
            frames_scored=parsed["frames"], frames_reference=expected,
            subsample=self.cfg.subsample, frame_rate=fps, ref_width=w, ref_height=h,
            compute_s=compute_s, tool_version=f"{ffv}; libvmaf {parsed['version']}",
            ffmpeg_version=ffv, libvmaf_version=parsed["version"], scoring_fps=speed,
            per_frame_path=str(per_frame),
        )
        labels = self.metrics.labels(ev.settings.codec, ev.settings.preset or "")
        self.metrics.vmaf.labels(*labels).observe(res.vmaf)
        if res.vmaf_neg is not None:
            self.metrics.vmaf_neg.labels(*labels).observe(res.vmaf_neg)
        return res
