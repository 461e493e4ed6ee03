"""quality_worker: for every finished encode, VMAF/PSNR/SSIM against its reference."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from schemas import quality_results, scenario_events
from schemas.quality_results import Pooled, QualityResult
from schemas.scenario_events import ScenarioFinished, parse_scenario_event
from shared.ffmpeg import ffmpeg_exe, ffmpeg_version, probe_video
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .config import QualityConfig
from .logic import UnsafePath, build_command, parse_vmaf_log, safe_media_path, vmaf_model_for


class QualityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "joulestream_quality_worker"
        self.vmaf = Histogram(f"{p}_vmaf", "VMAF per encode", ["codec", "preset"],
                              buckets=(20, 40, 60, 70, 80, 85, 90, 93, 95, 97, 99, 100),
                              registry=registry)
        self.compute = Histogram(f"{p}_compute_seconds", "Time to score one encode",
                                 buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
                                 registry=registry)
        self.frames = Counter(f"{p}_frames_scored_total", "Frames scored", registry=registry)
        self.in_flight = Gauge(f"{p}_jobs_in_flight", "Scoring jobs running", registry=registry)
        self.failures = Counter(f"{p}_failures_total", "Jobs that failed", ["reason"],
                                registry=registry)
        for r in ("unsafe_path", "missing_file", "ffmpeg", "frame_mismatch"):
            self.failures.labels(r)


class QualityProcessor:
    name = "quality_worker"
    input_topics: Sequence[str] = (scenario_events.TOPIC,)

    def __init__(self, registry: CollectorRegistry, cfg: QualityConfig | None = None) -> None:
        self.cfg = cfg or QualityConfig()
        self.metrics = QualityMetrics(registry)
        Path(self.cfg.out_dir).mkdir(parents=True, exist_ok=True)

    def _fail(self, reason: str, label: str) -> BadInput:
        self.metrics.failures.labels(label).inc()
        return BadInput(reason, label)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        try:
            ev = parse_scenario_event(record.value or b"")
        except ValidationError as e:
            raise BadInput(describe_validation_error(e), "schema") from e
        except (UnicodeDecodeError, ValueError) as e:
            raise BadInput(f"undecodable message: {e}", "decode") from e
        if not isinstance(ev, ScenarioFinished) or ev.settings.is_idle:
            return []
        if not ev.output_path or not ev.reference_path:
            return []  # nothing to score (e.g. a live encode): not an error
        result = await self.score(ev)
        return [Output(quality_results.TOPIC, ev.scenario_id.encode(), result.to_bytes())]

    async def score(self, ev: ScenarioFinished) -> QualityResult:
        assert ev.output_path and ev.reference_path
        try:
            dist = safe_media_path(ev.output_path, self.cfg.media_roots)
            ref = safe_media_path(ev.reference_path, self.cfg.media_roots)
        except UnsafePath as e:
            raise self._fail(str(e), "unsafe_path") from e
        for p in (dist, ref):
            if not p.is_file() or not os.access(p, os.R_OK):
                raise self._fail(f"file missing or unreadable: {p}", "missing_file")
        info = await asyncio.to_thread(probe_video, str(ref))
        w, h = int(info["width"]), int(info["height"])
        model = self.cfg.vmaf_model if self.cfg.vmaf_model != "auto" else vmaf_model_for(h)
        dur = ev.settings.duration_s or None
        fps = ev.settings.fps or info["fps"] or None
        safe_id = ev.scenario_id.replace("/", "_")
        log_path = Path(self.cfg.out_dir) / f"{safe_id}.vmaf.json"
        cmd = build_command(ffmpeg_exe(), str(dist), str(ref), w, h, str(log_path), model, dur,
                            self.cfg.threads, fps, self.cfg.subsample)
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), self.cfg.timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise self._fail(f"libvmaf timed out after {self.cfg.timeout_s}s",
                                 "ffmpeg") from None
        finally:
            self.metrics.in_flight.dec()
        compute_s = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = err.decode(errors="replace")[-1500:]
            raise self._fail(f"ffmpeg/libvmaf exited {proc.returncode}: {tail}", "ffmpeg")
        parsed = parse_vmaf_log(json.loads(log_path.read_text()))
        expected = round((dur or info["duration_s"]) * (fps or 0)) if (fps and dur) else None
        scored = parsed["frames"] * self.cfg.subsample
        if expected is not None and abs(scored - expected) > max(1, self.cfg.subsample):
            raise self._fail(
                f"frame count mismatch: scored {parsed['frames']} (×{self.cfg.subsample}) but the "
                f"reference window has {expected} frames; inputs are not aligned", "frame_mismatch")
        per_frame = log_path.with_suffix(".frames.json")
        per_frame.write_text(json.dumps(parsed["per_frame"]))
        pooled = {k: Pooled(**v) for k, v in parsed["pooled"].items()}
        self.metrics.compute.observe(compute_s)
        self.metrics.frames.inc(parsed["frames"])
        res = QualityResult(
            scenario_id=ev.scenario_id, host=ev.host, vmaf=pooled["vmaf"].mean,
            vmaf_neg=pooled["vmaf_neg"].mean if "vmaf_neg" in pooled else None,
            psnr_y=parsed.get("psnr_y"), psnr_avg=parsed.get("psnr_avg"),
            ssim=pooled["float_ssim"].mean if "float_ssim" in pooled else None,
            pooled=pooled, vmaf_model=model, frames_scored=parsed["frames"],
            frames_reference=expected if expected is not None else parsed["frames"],
            subsample=self.cfg.subsample, compute_s=compute_s,
            tool_version=f"{ffmpeg_version()}; libvmaf {parsed['version']}",
            per_frame_path=str(per_frame),
        )
        self.metrics.vmaf.labels(ev.settings.codec, ev.settings.preset or "").observe(res.vmaf)
        return res

    def tick(self, now_ns: int) -> list[Output]:
        return []

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass
