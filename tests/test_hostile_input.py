"""Hostile input on every input topic of every worker: each bad message is rejected with a
reason (BadInput → dead letter), never an unexpected exception, and never a file access
outside the media roots.  Hand-written cases plus hypothesis-generated ones."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from schemas import cost_results, power_samples, quality_results, scenario_energy, scenario_events
from services.cost_worker.app import CostProcessor
from services.energy_worker.app import EnergyProcessor
from services.quality_worker.app import QualityProcessor
from services.quality_worker.config import QualityConfig
from services.trainer.app import TrainerConfig, TrainerProcessor
from shared.kafka import BadInput

NOW = time.time_ns()


def record(topic: str, value: bytes, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=b"h", value=value, checksum=None,
                          serialized_key_size=1, serialized_value_size=len(value), headers=())


def settings_doc(**kw: Any) -> dict[str, Any]:
    return {"codec": "libx264", "preset": "fast", "bitrate_kbps": 800, "width": 640,
            "height": 360, "fps": 25, "duration_s": 2, **kw}


def finished_doc(**kw: Any) -> dict[str, Any]:
    doc = {"schema_version": 1, "kind": "finished", "event_id": "s1:finished",
           "scenario_id": "s1", "host": "h1", "settings": settings_doc(),
           "start_ns": NOW - 3 * 10**9, "end_ns": NOW - 10**9, "frames": 50, "cpu_s": 1.5}
    doc.update(kw)
    return doc


def samples_doc(**kw: Any) -> dict[str, Any]:
    doc = {"schema_version": 1, "host": "h1", "run_id": "r1",
           "zones": [{"name": "cpu", "kind": "cpu_estimate", "source": "estimate",
                      "basis": "estimated", "scope": "component"}],
           "samples": [{"seq": 0, "ts_ns": NOW - 10**9, "mono_ns": 1, "energy_j": {"cpu": 1.0}}]}
    doc.update(kw)
    return doc


def energy_doc(**kw: Any) -> dict[str, Any]:
    doc = {"schema_version": 1, "scenario_id": "s1", "host": "h1", "settings": settings_doc(),
           "start_ns": NOW - 3 * 10**9, "end_ns": NOW - 10**9, "wall_s": 2.0, "energy_j": 10.0,
           "zones_j": {"cpu": 10.0}, "basis": "estimated", "sources": ["estimate"],
           "scope": "component", "mean_power_w": 5.0, "coverage": 1.0, "max_gap_s": 0.1,
           "complete": True, "n_samples": 20, "emitted_by": "watermark"}
    doc.update(kw)
    return doc


def enc(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


# -- generic hostile payloads, valid for any topic ----------------------------------------
GENERIC: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"hello"),
    ("invalid utf-8", b'{"host": "\xff\xfe"}'),
    ("json null", b"null"),
    ("json list", b"[1, 2, 3]"),
    ("deep json", b"[" * 50_000 + b"]" * 50_000),
    ("deep object", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("huge string", b'{"host": "' + b"x" * 5_000_000 + b'"}'),
    ("truncated", b'{"schema_version": 1, "host": "h'),
]

FINISHED_BAD: list[tuple[str, dict[str, Any]]] = [
    ("wrong type", finished_doc(frames="many")),
    ("missing field", {k: v for k, v in finished_doc().items() if k != "end_ns"}),
    ("unknown version", finished_doc(schema_version=99)),
    ("NaN", finished_doc(cpu_s=math.nan)),
    ("infinity", finished_doc(cpu_s=math.inf)),
    ("negative duration", finished_doc(settings=settings_doc(duration_s=-5))),
    ("absurd duration", finished_doc(settings=settings_doc(duration_s=1e12))),
    ("end before start", finished_doc(end_ns=NOW - 10 * 10**9)),
    ("timestamp far in the future", finished_doc(start_ns=NOW + 10**18, end_ns=NOW + 10**18)),
    ("extra field", finished_doc(command="rm -rf /")),
    ("host with spaces", finished_doc(host="a host; rm -rf /")),
]


def processors(tmp: Path) -> dict[str, Any]:
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    return {
        "energy": EnergyProcessor(CollectorRegistry()),
        "quality": QualityProcessor(CollectorRegistry(), QualityConfig(
            media_roots=[str(media)], out_dir=str(tmp / "q"), threads=1)),
        "cost": CostProcessor(CollectorRegistry()),
        "trainer": TrainerProcessor(CollectorRegistry(), TrainerConfig(
            data_dir=str(tmp / "trainer"), retrain_every=0)),
    }


INPUTS = {
    "energy": [power_samples.TOPIC, scenario_events.TOPIC],
    "quality": [scenario_events.TOPIC],
    "cost": [scenario_energy.TOPIC],
    "trainer": [scenario_energy.TOPIC, quality_results.TOPIC, cost_results.TOPIC],
}


@pytest.fixture
def procs(tmp_path: Path) -> dict[str, Any]:
    return processors(tmp_path)


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("case,payload", GENERIC, ids=[c for c, _ in GENERIC])
async def test_generic_garbage_is_dead_lettered(procs: dict[str, Any], name: str, case: str,
                                                payload: bytes) -> None:
    for topic in INPUTS[name]:
        with pytest.raises(BadInput) as e:
            await procs[name].handle(record(topic, payload))
        assert e.value.reason, f"{name}/{topic}/{case}: empty reason"


@pytest.mark.parametrize("case,doc", FINISHED_BAD, ids=[c for c, _ in FINISHED_BAD])
async def test_bad_scenario_events_are_dead_lettered(procs: dict[str, Any], case: str,
                                                     doc: dict[str, Any]) -> None:
    for name in ("energy", "quality"):
        with pytest.raises(BadInput):
            await procs[name].handle(record(scenario_events.TOPIC, enc(doc)))


@pytest.mark.parametrize("case,doc", [
    ("NaN energy", energy_doc(energy_j=math.nan)),
    ("negative energy", energy_doc(energy_j=-1.0)),
    ("coverage above 1", energy_doc(coverage=1.5)),
    ("unknown basis", energy_doc(basis="guessed")),
    ("far future", energy_doc(start_ns=NOW + 10**18, end_ns=NOW + 10**18)),
])
async def test_bad_energy_records_are_dead_lettered(procs: dict[str, Any], case: str,
                                                    doc: dict[str, Any]) -> None:
    for name in ("cost", "trainer"):
        with pytest.raises(BadInput):
            await procs[name].handle(record(scenario_energy.TOPIC, enc(doc)))


@pytest.mark.parametrize("case,doc", [
    ("sample far in the future", samples_doc(samples=[
        {"seq": 0, "ts_ns": NOW + 10**18, "mono_ns": 1, "energy_j": {"cpu": 1.0}}])),
    ("negative energy", samples_doc(samples=[
        {"seq": 0, "ts_ns": NOW, "mono_ns": 1, "energy_j": {"cpu": -1.0}}])),
    ("undeclared zone", samples_doc(samples=[
        {"seq": 0, "ts_ns": NOW, "mono_ns": 1, "energy_j": {"gpu": 1.0}}])),
    ("no zones", samples_doc(zones=[])),
    ("NaN power", samples_doc(samples=[
        {"seq": 0, "ts_ns": NOW, "mono_ns": 1, "energy_j": {"cpu": 1.0},
         "power_w": {"cpu": math.nan}}])),
])
async def test_bad_power_samples_are_dead_lettered(procs: dict[str, Any], case: str,
                                                   doc: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        await procs["energy"].handle(record(power_samples.TOPIC, enc(doc)))


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../../../../etc/passwd", "MEDIA/../secret.mkv", "MEDIA/link.mkv",
    "MEDIA/missing.mkv", "MEDIA/$(touch PWNED).mkv", "MEDIA/a.mkv; touch PWNED",
])
async def test_quality_paths_are_confined(tmp_path: Path, path: str) -> None:
    procs = processors(tmp_path)
    media = tmp_path / "media"
    (tmp_path / "secret.mkv").write_bytes(b"secret")
    (media / "link.mkv").symlink_to(tmp_path / "secret.mkv")
    p = path.replace("MEDIA", str(media))
    doc = finished_doc(output_path=p, reference_path=p)
    with pytest.raises(BadInput) as e:
        await procs["quality"].handle(record(scenario_events.TOPIC, enc(doc)))
    assert "PWNED" not in {f.name for f in tmp_path.rglob("*")}
    assert e.value.reason


async def test_duplicates_and_out_of_order_are_harmless(procs: dict[str, Any]) -> None:
    """A replayed finished event before its samples, then samples twice: one result."""
    energy = procs["energy"]
    end = NOW - 2 * 10**9
    ev = finished_doc(start_ns=end - 2 * 10**9, end_ns=end)
    samples = samples_doc(samples=[
        {"seq": i, "ts_ns": end - 3 * 10**9 + i * 10**8, "mono_ns": i + 1,
         "energy_j": {"cpu": float(i)}} for i in range(40)])
    for raw, topic in ((enc(ev), scenario_events.TOPIC), (enc(ev), scenario_events.TOPIC),
                       (enc(samples), power_samples.TOPIC), (enc(samples), power_samples.TOPIC)):
        assert await energy.handle(record(topic, raw)) == []
    out = energy.tick(time.time_ns())
    assert len(out) == 1
    doc = json.loads(out[0].value)
    assert doc["complete"] and doc["energy_j"] == pytest.approx(20.0)
    assert energy.tick(time.time_ns()) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300) | json_values.map(enc),
       mutate=st.sampled_from(["raw", "finished", "energy", "samples"]))
async def test_fuzzed_messages_never_crash_a_worker(tmp_path: Path, payload: bytes,
                                                    mutate: str) -> None:
    """Any bytes, or a valid message with one field replaced by arbitrary JSON, is either
    accepted or rejected with BadInput: never another exception."""
    procs = processors(tmp_path)
    if mutate != "raw":
        try:
            value = json.loads(payload)
        except ValueError:
            value = None
        base = {"finished": finished_doc(), "energy": energy_doc(),
                "samples": samples_doc()}[mutate]
        key = sorted(base)[len(payload) % len(base)]
        payload = enc({**base, key: value})
    for name, topics in INPUTS.items():
        for topic in topics:
            try:
                await procs[name].handle(record(topic, payload))
            except BadInput as e:
                assert e.reason
