"""``joulestream publish FILE``: scenario events from any tool, keyed by their host."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from schemas.scenario_events import EncodeSettings, ScenarioFinished
from shared.settings import KafkaSettings
from tests.kafka_helpers import read_records


def test_publish_cli_sends_valid_lines_and_rejects_a_bad_file(broker: str, tmp_path: Path
                                                              ) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}."
    now = time.time_ns()
    evs = [ScenarioFinished(event_id=f"ext{i}:finished", scenario_id=f"ext{i}", host=f"h{i}",
                            settings=EncodeSettings(codec="libx264"), start_ns=now - 2 * 10**9,
                            end_ns=now - 10**9, frames=10, cpu_s=0.5) for i in range(3)]
    good = tmp_path / "events.jsonl"
    good.write_text("\n".join(e.model_dump_json() for e in evs) + "\n\n")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker, "KAFKA_TOPIC_PREFIX": prefix}
    cmd = [sys.executable, "-c", "from services.cli import main; main()", "publish"]
    r = subprocess.run([*cmd, str(good)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "published 3 events" in r.stdout
    kafka = KafkaSettings(bootstrap_servers=broker, topic_prefix=prefix)
    found = asyncio.run(read_records(kafka, ["scenario.events"],
                                     lambda f: len(f["scenario.events"]) >= 3, 60))
    got = {json.loads(rec.value)["scenario_id"]: rec.key for rec in found["scenario.events"]}
    assert got == {f"ext{i}": f"h{i}".encode() for i in range(3)}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(evs[0].model_dump_json() + "\n" + '{"kind": "finished"}\n')
    r = subprocess.run([*cmd, str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "line 2" in r.stderr  # nothing is published from a bad file
