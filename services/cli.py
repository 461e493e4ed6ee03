"""``joulestream``: one command line for every service and tool."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from shared.httpserver import Health
from shared.kafka import StopSignal, ensure_topics, run_worker, with_retry
from shared.service import run as run_service
from shared.service import setup_logging
from shared.settings import KafkaSettings, ServiceSettings


def _worker_main(make: Any, group: str, **kw: Any) -> Any:
    async def main(reg: CollectorRegistry, health: Health, stop: StopSignal) -> None:
        kafka = KafkaSettings()
        # the broker may not be up yet: wait for it (not ready on /healthz meanwhile)
        if not await with_retry("creating topics", lambda: ensure_topics(kafka), stop, health):
            return
        await run_worker(make(reg), kafka, group, reg, health, stop, **kw)
    return main


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    setup_logging("WARNING")
    opts = DemoOptions(out=Path(a.out) if a.out else None, bootstrap=a.bootstrap)
    if a.quick:
        opts.presets, opts.bitrates_kbps, opts.duration_s, opts.idle_s = (
            ("veryfast",), (400, 1500), 2.0, 2.0)
    asyncio.run(run_demo(opts))
    return 0


def cmd_broker(a: argparse.Namespace) -> int:
    from shared.broker import EmbeddedBroker

    b = EmbeddedBroker(a.log, port=a.port).start()
    print(f"embedded broker on {b.bootstrap} (log {a.log}); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
    return 0


def cmd_topics(a: argparse.Namespace) -> int:
    asyncio.run(ensure_topics(KafkaSettings()))
    print("topics ensured")
    return 0


def cmd_collector(a: argparse.Namespace) -> int:
    from .power_collector.app import run_collector
    from .power_collector.config import CollectorConfig

    overrides = {k: v for k, v in (("source", a.source), ("interval_s", a.interval),
                                   ("powercap_root", a.powercap_root)) if v is not None}
    cfg = CollectorConfig(**overrides)
    settings = ServiceSettings()

    async def main(reg: CollectorRegistry, health: Health, stop: StopSignal) -> None:
        kafka = KafkaSettings()
        await run_collector(cfg, kafka, reg, health, stop, settings.host)

    run_service("power_collector", main, settings)
    return 0


def cmd_quality(a: argparse.Namespace) -> int:
    from .quality_worker.app import QualityProcessor

    run_service("quality_worker",
                _worker_main(QualityProcessor, "joulestream-quality", max_records=1))
    return 0


def cmd_cost(a: argparse.Namespace) -> int:
    from .cost_worker.app import CostProcessor
    from .cost_worker.config import CostConfig, PriceBookError, load_price_book

    try:
        book = load_price_book(a.price_book or CostConfig().price_book)
    except PriceBookError as e:
        print(f"joulestream cost-worker: {e}", file=sys.stderr)
        return 2
    run_service("cost_worker", _worker_main(lambda r: CostProcessor(r, book), "joulestream-cost"))
    return 0


def cmd_trainer(a: argparse.Namespace) -> int:
    from .trainer.app import TrainerProcessor

    run_service("trainer", _worker_main(TrainerProcessor, "joulestream-trainer"))
    return 0


def cmd_publish(a: argparse.Namespace) -> int:
    """Publish scenario events (JSON objects, one per line) from a file or stdin."""
    from pydantic import ValidationError

    from schemas import scenario_events

    text = Path(a.file).read_text() if a.file != "-" else sys.stdin.read()
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(scenario_events.parse_scenario_event(line.encode()))
        except ValidationError as e:
            print(f"line {n}: {e}", file=sys.stderr)
            return 2

    from .runner.cli import _publisher_session

    async def publish_all(pub: Any) -> None:
        for ev in events:
            await pub.publish(ev)  # keyed by the event's own host

    _publisher_session(publish_all)
    print(f"published {len(events)} events")
    return 0


def cmd_schemas(a: argparse.Namespace) -> int:
    from schemas import json_schemas, render

    if a.write:
        from schemas import write_json_schemas

        for p in write_json_schemas():
            print(p)
    else:
        print(json.dumps({k: json.loads(render(v)) for k, v in json_schemas().items()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="joulestream", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on the embedded broker")
    d.add_argument("--out", help="write report.json and report.html (and keep data) here")
    d.add_argument("--quick", action="store_true", help="a smaller matrix (for smoke tests)")
    d.add_argument("--bootstrap", help="use this Kafka instead of the embedded broker")
    d.set_defaults(fn=cmd_demo)

    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--log", default="joulestream-broker.log")
    b.set_defaults(fn=cmd_broker)

    sub.add_parser("topics", help="create joulestream's topics").set_defaults(fn=cmd_topics)

    c = sub.add_parser("power-collector", help="sample host power → power.samples")
    c.add_argument("--source", choices=["auto", "rapl", "estimate"])
    c.add_argument("--interval", type=float, help="sampling interval in seconds")
    c.add_argument("--powercap-root")
    c.set_defaults(fn=cmd_collector)

    sub.add_parser("quality-worker", help="VMAF/PSNR/SSIM → quality.results"
                   ).set_defaults(fn=cmd_quality)
    cw = sub.add_parser("cost-worker", help="cost and carbon → cost.results")
    cw.add_argument("--price-book", help="YAML price book (see config/pricebook.example.yaml)")
    cw.set_defaults(fn=cmd_cost)
    sub.add_parser("trainer", help="dataset and models → model.updates"
                   ).set_defaults(fn=cmd_trainer)

    pb = sub.add_parser("publish", help="publish scenario events (JSON lines) from FILE or -")
    pb.add_argument("file")
    pb.set_defaults(fn=cmd_publish)

    s = sub.add_parser("schemas", help="print (or --write) the JSON Schemas of every topic")
    s.add_argument("--write", action="store_true")
    s.set_defaults(fn=cmd_schemas)

    bench = sub.add_parser("bench", help="run benchmarks (all, or the named ones); prints JSON")
    bench.add_argument("names", nargs="*", help=f"any of: {', '.join(benchmark_names())}")
    bench.add_argument("--quick", action="store_true", help="fewer/shorter runs")
    bench.add_argument("--write-docs", action="store_true",
                       help="also write docs/benchmarks.md (the default when no names are "
                            "given)")
    bench.add_argument("--no-docs", action="store_true",
                       help="do not write docs/benchmarks.md")
    bench.set_defaults(fn=cmd_bench)

    # services add their own subcommands: services/<name>/cli.py defines register(sub)
    for pkg in SERVICE_PACKAGES:
        try:
            mod = importlib.import_module(f"services.{pkg}.cli")
        except ModuleNotFoundError as e:
            if e.name != f"services.{pkg}.cli":
                raise
            continue
        mod.register(sub)
    return p


SERVICE_PACKAGES = ("power_collector", "runner", "energy_worker", "quality_worker",
                    "cost_worker", "trainer")


def benchmark_names() -> list[str]:
    import benchmarks

    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if not m.name.startswith("_"))


def cmd_bench(a: argparse.Namespace) -> int:
    """Each benchmarks/<name>.py has ``run(quick: bool) -> dict``; figures go to stdout.

    With no names every benchmark runs and docs/benchmarks.md is written (``--no-docs``
    skips it); named runs write it only with ``--write-docs``.  A benchmark that fails is
    reported as ``{"error": ...}`` and the others still run (exit code 1)."""
    names = a.names or benchmark_names()
    unknown = set(names) - set(benchmark_names())
    if unknown:
        print(f"unknown benchmarks: {sorted(unknown)}; have {benchmark_names()}",
              file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    failed = False
    for n in names:
        print(f"running benchmark {n} …", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"benchmarks.{n}")
            results[n] = mod.run(quick=a.quick)
        except Exception as e:  # one broken benchmark must not hide the others' figures
            logging.getLogger("bench").exception("benchmark %s failed", n)
            results[n] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
        print(f"benchmark {n}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    out = results[names[0]] if len(names) == 1 else results
    print(json.dumps(out, indent=2))
    if (a.write_docs or not a.names) and not a.no_docs:
        from benchmarks._report import write_benchmarks_md

        path = write_benchmarks_md(results, quick=a.quick)
        print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.captureWarnings(True)
    sys.exit(args.fn(args))
