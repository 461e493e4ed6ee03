"""``joulestream demo``: the whole pipeline on one machine, on the embedded broker.

Starts the broker and every service (each with its own /metrics and /healthz), runs an idle
baseline and a small x264 matrix with real ffmpeg on a natural clip, waits until energy,
quality and cost of every scenario arrived through Kafka, trains the models, and prints
(and optionally writes) the report.  Every number shown was computed by the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from schemas import cost_results, model_updates, quality_results, scenario_energy, scenario_events
from schemas.cost_results import CostResult
from schemas.model_updates import ModelUpdate
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import ScenarioFailed, ScenarioFinished
from shared.broker import EmbeddedBroker
from shared.ffmpeg import natural_clip
from shared.httpserver import Health, MetricsServer
from shared.kafka import StopSignal, ensure_topics, make_consumer, make_producer, run_worker
from shared.settings import KafkaSettings

from .cost_worker.app import CostProcessor
from .energy_worker.app import EnergyProcessor
from .energy_worker.logic import JoinConfig
from .power_collector.app import run_collector
from .power_collector.config import CollectorConfig
from .quality_worker.app import QualityProcessor
from .quality_worker.config import QualityConfig
from .report import render_html, report_rows, table_text
from .runner.app import Publisher, run_matrix
from .runner.logic import build_matrix
from .trainer.app import TrainerConfig, TrainerProcessor

log = logging.getLogger("demo")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Results:
    energy: dict[str, ScenarioEnergy] = field(default_factory=dict)
    quality: dict[str, QualityResult] = field(default_factory=dict)
    cost: dict[str, CostResult] = field(default_factory=dict)
    models: dict[str, ModelUpdate] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def listen(kafka: KafkaSettings, res: Results, stop: StopSignal) -> None:
    """Reads the result topics from the beginning (no group) into ``res``."""
    topics = [scenario_energy.TOPIC, quality_results.TOPIC, cost_results.TOPIC,
              model_updates.TOPIC]
    consumer = make_consumer(kafka, None)
    await consumer.start()
    try:
        parts = [TopicPartition(kafka.topic(t), p) for t in topics
                 for p in (consumer.partitions_for_topic(kafka.topic(t))
                           or range(kafka.partitions))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, recs in batch.items():
                topic = kafka.logical(tp.topic)
                for r in recs:
                    if topic == scenario_energy.TOPIC:
                        e = ScenarioEnergy.from_bytes(r.value)
                        res.energy[e.scenario_id] = e
                    elif topic == quality_results.TOPIC:
                        q = QualityResult.from_bytes(r.value)
                        res.quality[q.scenario_id] = q
                    elif topic == cost_results.TOPIC:
                        c = CostResult.from_bytes(r.value)
                        res.cost[c.scenario_id] = c
                    else:
                        m = ModelUpdate.from_bytes(r.value)
                        res.models[m.target] = m
            if batch:
                res.changed.set()
    finally:
        await consumer.stop()


async def wait_for(res: Results, cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        res.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(res.changed.wait(), min(left, 1.0))


@dataclass
class DemoOptions:
    out: Path | None = None
    presets: tuple[str, ...] = ("veryfast", "medium")
    resolutions: tuple[str, ...] = ("640x360", "1280x720")
    bitrates_kbps: tuple[float, ...] = (300, 800, 2000)
    duration_s: float = 5.0
    idle_s: float = 3.0
    timeout_s: float = 600.0
    bootstrap: str | None = None  # use this Kafka instead of the embedded broker


def _workdir(out: Path | None) -> Path:
    work = Path(out or tempfile.mkdtemp(prefix="joulestream-demo-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return work


async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    work = _workdir(opts.out)
    broker = None
    if opts.bootstrap is None:
        broker = EmbeddedBroker(work / "broker.log")
        say(f"starting embedded broker (Tansu) … log: {work / 'broker.log'}")
        broker.start()
        bootstrap = broker.bootstrap
    else:
        bootstrap = opts.bootstrap
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    stop = StopSignal()
    services_stop = StopSignal()
    servers: list[MetricsServer] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        await ensure_topics(kafka)
        say(f"broker ready at {bootstrap}; topics created ({kafka.partitions} partitions each)")
        source = natural_clip()
        host = os.uname().nodename
        run_id = "demo" + uuid.uuid4().hex[:8]

        def start_service(name: str, coro_fn: Any) -> tuple[CollectorRegistry, Health]:
            reg, health = CollectorRegistry(), Health()
            srv = MetricsServer(reg, health, 0, "127.0.0.1").start()
            servers.append(srv)
            say(f"  {name:<16} http://127.0.0.1:{srv.port}/metrics")
            tasks.append(asyncio.create_task(coro_fn(reg, health), name=name))
            return reg, health

        say("starting services:")
        col_cfg = CollectorConfig(source="auto", interval_s=0.1)
        start_service("power_collector", lambda r, h: run_collector(
            col_cfg, kafka, r, h, services_stop, host))
        def worker(proc_factory: Any, group: str, **kw: Any) -> Any:
            def main(r: CollectorRegistry, h: Health) -> Any:
                proc = proc_factory(r)
                procs[proc.name] = proc
                return run_worker(proc, kafka, group, r, h, services_stop, **kw)
            return main

        procs: dict[str, Any] = {}
        start_service("energy_worker", worker(
            lambda r: EnergyProcessor(r, JoinConfig(timeout_s=30)), "joulestream-energy"))
        start_service("cost_worker", worker(lambda r: CostProcessor(r), "joulestream-cost"))
        start_service("trainer", worker(lambda r: TrainerProcessor(r, TrainerConfig(
            data_dir=str(work / "trainer"), retrain_every=0)), "joulestream-trainer"))
        trainer: TrainerProcessor = procs["trainer"]
        res = Results()
        tasks.append(asyncio.create_task(listen(kafka, res, stop), name="listener"))

        scenarios = build_matrix(run_id, ["libx264"], list(opts.presets), list(opts.resolutions),
                                 list(opts.bitrates_kbps), [], 25.0, opts.duration_s, [1], source)
        say(f"power source: {_source_reason(col_cfg)}")
        await asyncio.sleep(1.0)  # let the collector publish its first samples
        producer = make_producer(kafka)
        await producer.start()
        try:
            say(f"idle baseline: {opts.idle_s:.0f} s, then {len(scenarios)} encodes of "
                f"{opts.duration_s:g} s of Big Buck Bunny with real ffmpeg")

            def progress(i: int, n: int, sc: Any, ev: ScenarioFinished | ScenarioFailed) -> None:
                if isinstance(ev, ScenarioFinished):
                    say(f"  encoded {i}/{n} {sc.scenario_id.split('-', 2)[2]}: {ev.frames} frames "
                        f"in {ev.wall_s:.2f} s, {ev.cpu_s:.2f} CPU-s")
                else:
                    say(f"  FAILED {i}/{n} {sc.scenario_id}: exit {ev.exit_code}")

            pub = Publisher(producer, host, kafka.topic(scenario_events.TOPIC))
            done = await run_matrix(pub, scenarios, source,
                                    work / "encodes", run_id, idle_s=opts.idle_s,
                                    progress=progress)
        finally:
            await producer.stop()
        ok = [e.scenario_id for e in done if isinstance(e, ScenarioFinished)]
        # quality is scored after the encodes so that scoring does not load the host whose
        # energy is being measured (in production, quality workers run on other hosts)
        say("encodes done; starting quality_worker (VMAF, PSNR, SSIM in one libvmaf pass)")
        qcfg = QualityConfig(media_roots=[str(work), os.path.dirname(source)],
                             out_dir=str(work / "quality"))
        start_service("quality_worker", worker(lambda r: QualityProcessor(r, qcfg),
                                               "joulestream-quality", max_records=1))
        last = [-1]

        def all_in() -> bool:
            n = sum(1 for s in ok if s in res.energy and s in res.quality and s in res.cost)
            if n != last[0]:
                say(f"  results: {len(res.energy)} energy, {len(res.quality)} quality, "
                    f"{len(res.cost)} cost of {len(ok)} scenarios")
                last[0] = n
            for t in tasks:
                if t.done() and t.exception():
                    raise RuntimeError(f"service {t.get_name()} failed") from t.exception()
            return n == len(ok)

        await wait_for(res, all_in, opts.timeout_s, "energy, quality and cost of every scenario")
        say("training models on the joined dataset (grouped cross-validation) …")
        trainer.train_requested = True
        await wait_for(res, lambda: len(res.models) >= 2 or trainer.last_error is not None,
                       120, "model.updates")
        if trainer.last_error:
            say(f"  no model: {trainer.last_error}")
        report = build_report(res, ok, trainer, source, bootstrap)
        print(table_text(report))
        if opts.out:
            (work / "report.json").write_text(json.dumps(report, indent=2))
            (work / "report.html").write_text(render_html(report))
            say(f"wrote {work / 'report.json'} and {work / 'report.html'}")
        return report
    finally:
        stop.set()
        services_stop.set()
        for t in tasks:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(t, 15)
        for s in servers:
            s.stop()
        if broker:
            broker.stop()
        if opts.out is None:
            shutil.rmtree(work, ignore_errors=True)


def _source_reason(cfg: CollectorConfig) -> str:
    from .power_collector.sources import open_source

    _, why = open_source(cfg.source, cfg.powercap_root, cfg.estimate_idle_w, cfg.estimate_max_w)
    return why


def build_report(res: Results, ok: list[str], trainer: TrainerProcessor, source: str,
                 bootstrap: str) -> dict[str, Any]:
    rows = report_rows(res.energy, res.quality, res.cost, ok)
    idle = [e for e in res.energy.values() if e.settings.is_idle]
    models = [{
        "target": m.target, "unit": m.unit, "algorithm": m.algorithm, "n_samples": m.n_samples,
        "cv_mae": m.cv.mae, "cv_mape": m.cv.mape, "cv_folds": m.cv.folds,
        "cv_grouping": m.cv.grouping,
        "baseline_cv_mae": m.baseline_cv.mae if m.baseline_cv else None,
        "model_id": m.model_id, "sha256": m.sha256,
    } for m in sorted(res.models.values(), key=lambda m: m.target)]
    st = trainer.store.status()
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "broker": bootstrap,
        "source_clip": source,
        "idle_baseline": ({"energy_j": idle[0].energy_j, "mean_power_w": idle[0].mean_power_w,
                           "basis": idle[0].basis, "sources": idle[0].sources,
                           "wall_s": idle[0].wall_s} if idle else None),
        "scenarios": rows,
        "models": models,
        "model_error": trainer.last_error,
        "dataset": {"complete": st.complete, "waiting": st.waiting,
                    "incomplete": st.incomplete, "reasons": st.reasons},
    }
