"""``joulestream tco``: monthly energy, cost and carbon of a workload (see tco.py, docs/cost.md).

    joulestream tco LADDER.yaml --report demo-out/report.json [--price-book BOOK.yaml]
    joulestream tco LADDER.yaml --from-kafka            # scenario.energy, from the start
    joulestream tco LADDER.yaml --predictor pkg.module:function   # for unmeasured rungs
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from pydantic import ValidationError

from shared.configfile import load_yaml

from .config import CostConfig, PriceBookError, format_errors, load_price_book
from .tco import (
    Ladder,
    Measurement,
    NoData,
    Predictor,
    Projection,
    measurement_from_energy,
    measurement_from_report_row,
    project,
)


class LadderError(ValueError):
    pass


def load_ladder(path: str) -> Ladder:
    p = Path(path)
    doc = load_yaml(p, "ladder", LadderError)
    try:
        return Ladder.model_validate(doc or {})
    except ValidationError as e:
        raise LadderError(f"ladder {p} is invalid:\n{format_errors(e)}") from e


def measurements_from_report(path: str) -> list[Measurement]:
    """Scenarios of a ``report.json`` written by ``joulestream demo --out DIR``."""
    doc = json.loads(Path(path).read_text())
    rows = doc.get("scenarios") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path} has no 'scenarios' list (is it a joulestream report.json?)")
    return [m for m in map(measurement_from_report_row, rows) if m is not None]


async def measurements_from_kafka(timeout_s: float = 60.0) -> list[Measurement]:
    """Every complete scenario in ``scenario.energy`` (read from the start to the end)."""
    from schemas import scenario_energy
    from schemas.scenario_energy import ScenarioEnergy
    from shared.kafka import make_consumer
    from shared.settings import KafkaSettings

    kafka = KafkaSettings()
    topic = kafka.topic(scenario_energy.TOPIC)
    c = make_consumer(kafka, None)
    await c.start()
    latest: dict[str, Measurement] = {}
    try:
        await c.topics()  # fetches metadata, so partitions_for_topic knows the topic
        parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        end = await c.end_offsets(parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while [tp for tp in parts if await c.position(tp) < end[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s} s")
            for recs in (await c.getmany(timeout_ms=500)).values():
                for r in recs:
                    try:
                        m = measurement_from_energy(ScenarioEnergy.from_bytes(r.value or b""))
                    except (ValidationError, ValueError):
                        continue  # the energy worker's output is validated; skip strays
                    if m is not None:
                        latest[m.scenario_id] = m  # a replay rewrites the same key
    finally:
        await c.stop()
    return list(latest.values())


def load_predictor(spec: str) -> Predictor:
    """``package.module:function`` → the function (see tco.Predictor for its contract)."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"--predictor wants MODULE:FUNCTION, got {spec!r}")
    fn = getattr(importlib.import_module(mod_name), fn_name, None)
    if not callable(fn):
        raise ValueError(f"{spec} is not a callable")
    return fn  # type: ignore[no-any-return]


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def render_projection(p: Projection) -> str:
    head = ("rung", "basis", "kWh/month", "billed kWh", "energy", "compute", "total",
            "kg CO2e")
    rows = [(r.rung, r.basis, _fmt(r.monthly_energy_kwh, ".2f"), _fmt(r.monthly_billed_kwh, ".2f"),
             _fmt(r.monthly_energy_cost, ".2f"), _fmt(r.monthly_compute_cost, ".2f"),
             _fmt(r.monthly_total_cost, ".2f"), _fmt(r.monthly_carbon_kg, ".2f"))
            for r in p.rungs]
    rows.append(("TOTAL", p.basis, _fmt(p.monthly_energy_kwh, ".2f"),
                 _fmt(p.monthly_billed_kwh, ".2f"), _fmt(p.monthly_energy_cost, ".2f"), "",
                 _fmt(p.monthly_total_cost, ".2f"), _fmt(p.monthly_carbon_kg, ".2f")))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [f"TCO of ladder {p.ladder!r} per month (money in {p.currency}, region {p.region}, "
             f"{p.price_per_kwh:.4g} {p.currency}/kWh, {p.carbon_g_per_kwh:g} gCO2e/kWh):",
             "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("Sources: " + "; ".join(f"{r.rung}: {r.source}" for r in p.rungs))
    lines += [f"Assumption: {a}" for a in p.assumptions]
    if p.basis != "measured":
        lines.append("Energy is not (only) measured: see each rung's basis above.")
    return "\n".join(lines)


def cmd_tco(a: argparse.Namespace) -> int:
    try:
        ladder = load_ladder(a.ladder)
        book = load_price_book(a.price_book or CostConfig().price_book)
        predictor = load_predictor(a.predictor) if a.predictor else None
        if a.report:
            ms = measurements_from_report(a.report)
        elif a.from_kafka:
            ms = asyncio.run(measurements_from_kafka())
        else:
            ms = []
        proj = project(ladder, book, ms, predictor)
    except (LadderError, PriceBookError, NoData, ValueError, OSError, KeyError) as e:
        print(f"joulestream tco: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(dataclasses.asdict(proj), indent=2))
    else:
        print(render_projection(proj))
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("tco", help="monthly energy, cost and carbon of a workload and ladder")
    t.add_argument("ladder", help="ladder YAML (see config/ladder.example.yaml)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--report", help="report.json written by 'joulestream demo --out DIR'")
    src.add_argument("--from-kafka", action="store_true",
                     help="read measured scenarios from scenario.energy (KAFKA_* settings)")
    t.add_argument("--price-book", help="YAML price book (default: built-in USD defaults)")
    t.add_argument("--predictor", help="MODULE:FUNCTION predicting rungs nothing measured")
    t.add_argument("--json", action="store_true", help="print the projection as JSON")
    t.set_defaults(fn=cmd_tco)
