"""Schemas: JSON Schema files match the models; models reject what they must."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import JSON_DIR, json_schemas, render
from schemas.power_samples import PowerSamples
from schemas.scenario_events import EncodeSettings, ScenarioFinished, parse_scenario_event

NOW = 1_790_000_000_000_000_000


def test_json_schema_files_match_models() -> None:
    """Fails when a model changed and `joulestream schemas --write` was not run."""
    expected = json_schemas()
    on_disk = {p.name for p in JSON_DIR.glob("*.json")}
    assert on_disk == set(expected), "schema files and models differ in number"
    for name, schema in expected.items():
        assert (JSON_DIR / name).read_text() == render(schema), f"{name} drifted"


def test_every_schema_carries_a_version() -> None:
    for name, schema in json_schemas().items():
        text = json.dumps(schema)
        assert "schema_version" in text, name


def finished(**kw: object) -> ScenarioFinished:
    base = dict(event_id="s1:finished", scenario_id="s1", host="h1",
                settings=EncodeSettings(codec="libx264", width=640, height=360, fps=25,
                                        duration_s=5, bitrate_kbps=800),
                start_ns=NOW, end_ns=NOW + 5 * 10**9, frames=125, cpu_s=1.0)
    base.update(kw)
    return ScenarioFinished(**base)  # type: ignore[arg-type]


def test_scenario_event_round_trip() -> None:
    ev = finished()
    back = parse_scenario_event(ev.to_bytes())
    assert back == ev


@pytest.mark.parametrize("bad", [
    {"end_ns": NOW - 1},                       # end before start
    {"cpu_s": float("nan")},                   # NaN
    {"cpu_s": -1.0},                           # negative
    {"start_ns": 10},                          # absurd timestamp
    {"host": "a b"},                           # name with a space
])
def test_scenario_finished_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        finished(**bad)


def test_unknown_version_and_fields_rejected() -> None:
    doc = json.loads(finished().to_bytes())
    doc["schema_version"] = 2
    with pytest.raises(ValidationError):
        parse_scenario_event(json.dumps(doc).encode())
    doc["schema_version"] = 1
    doc["surprise"] = 1
    with pytest.raises(ValidationError):
        parse_scenario_event(json.dumps(doc).encode())


def test_power_samples_checks_zones_and_order() -> None:
    zone = {"name": "cpu", "kind": "cpu_estimate", "source": "estimate", "basis": "estimated",
            "scope": "component"}
    s0 = {"seq": 0, "ts_ns": NOW, "mono_ns": 1, "energy_j": {"cpu": 0.0}}
    s1 = {"seq": 1, "ts_ns": NOW + 1, "mono_ns": 2, "energy_j": {"cpu": 1.0}}
    ok = PowerSamples.model_validate({"host": "h", "run_id": "r", "zones": [zone],
                                      "samples": [s0, s1]})
    assert len(ok.samples) == 2
    with pytest.raises(ValidationError, match="increasing seq"):
        PowerSamples.model_validate({"host": "h", "run_id": "r", "zones": [zone],
                                     "samples": [s1, s0]})
    with pytest.raises(ValidationError, match="undeclared"):
        PowerSamples.model_validate({"host": "h", "run_id": "r", "zones": [zone], "samples": [
            {**s0, "energy_j": {"gpu": 1.0}}]})
