"""Event schemas, one module per topic.  ``python -m schemas`` regenerates ``schemas/json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import (
    cost_results,
    dead_letters,
    host_baselines,
    model_updates,
    power_samples,
    quality_results,
    scenario_energy,
    scenario_events,
)

JSON_DIR = Path(__file__).parent / "json"

#: every topic the system uses, with its partition key
TOPICS: dict[str, str] = {
    power_samples.TOPIC: "host",
    scenario_events.TOPIC: "host",
    scenario_energy.TOPIC: "scenario_id",
    quality_results.TOPIC: "scenario_id",
    cost_results.TOPIC: "scenario_id",
    model_updates.TOPIC: "target",
    host_baselines.TOPIC: "host",
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema, for every topic payload."""
    return {
        "power.samples.json": power_samples.PowerSamples.model_json_schema(),
        "scenario.events.json": scenario_events.scenario_event_json_schema(),
        "scenario.energy.json": scenario_energy.ScenarioEnergy.model_json_schema(),
        "quality.results.json": quality_results.QualityResult.model_json_schema(),
        "cost.results.json": cost_results.CostResult.model_json_schema(),
        "model.updates.json": model_updates.ModelUpdate.model_json_schema(),
        "dead_letter.json": dead_letters.DeadLetter.model_json_schema(),
        "host.baselines.json": host_baselines.HostBaselines.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(render(schema))
        out.append(path)
    return out
