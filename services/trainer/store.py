"""Dataset store: one row per scenario, its parts upserted as they arrive (SQLite).

A row is *complete* when it has energy whose window was fully covered by samples and a
quality score; only complete rows are ever trained on.  Because energy arrives as part of
``scenario.energy`` (the join's own output), a training row without power data cannot exist.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.cost_results import CostResult
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    scenario_id TEXT PRIMARY KEY,
    host TEXT,
    energy_json TEXT,
    quality_json TEXT,
    cost_json TEXT,
    updated_ns INTEGER
);
"""


@dataclass(frozen=True)
class StoreStatus:
    complete: int
    waiting: int
    incomplete: int
    reasons: dict[str, int]


class DatasetStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _upsert(self, sid: str, host: str, column: str, payload: str, now_ns: int) -> None:
        assert column in ("energy_json", "quality_json", "cost_json")
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO records (scenario_id, host, {column}, updated_ns) VALUES (?,?,?,?) "
                f"ON CONFLICT(scenario_id) DO UPDATE SET {column}=excluded.{column}, "
                "updated_ns=excluded.updated_ns",
                (sid, host, payload, now_ns),
            )

    def put_energy(self, e: ScenarioEnergy, now_ns: int = 0) -> None:
        self._upsert(e.scenario_id, e.host, "energy_json", e.model_dump_json(), now_ns)

    def put_quality(self, q: QualityResult, now_ns: int = 0) -> None:
        self._upsert(q.scenario_id, q.host, "quality_json", q.model_dump_json(), now_ns)

    def put_cost(self, c: CostResult, now_ns: int = 0) -> None:
        self._upsert(c.scenario_id, c.host, "cost_json", c.model_dump_json(), now_ns)

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT scenario_id, energy_json, quality_json, cost_json FROM records "
                "ORDER BY scenario_id")
            out = []
            for sid, e, q, c in cur.fetchall():
                out.append({
                    "scenario_id": sid,
                    "energy": ScenarioEnergy.model_validate_json(e) if e else None,
                    "quality": QualityResult.model_validate_json(q) if q else None,
                    "cost": CostResult.model_validate_json(c) if c else None,
                })
            return out

    @staticmethod
    def state_of(row: dict[str, Any]) -> tuple[str, str]:
        """('complete'|'waiting'|'incomplete', reason)."""
        e: ScenarioEnergy | None = row["energy"]
        if e is not None and e.settings.is_idle:
            return "incomplete", "idle baseline (not an encode)"
        if e is not None and not e.complete:
            return "incomplete", f"energy window only {e.coverage:.0%} covered by samples"
        if e is None:
            return "waiting", "waiting for energy"
        if row["quality"] is None:
            return "waiting", "waiting for quality"
        return "complete", "complete"

    def status(self) -> StoreStatus:
        counts = {"complete": 0, "waiting": 0, "incomplete": 0}
        reasons: dict[str, int] = {}
        for r in self.rows():
            state, why = self.state_of(r)
            counts[state] += 1
            if state != "complete":
                reasons[why] = reasons.get(why, 0) + 1
        return StoreStatus(counts["complete"], counts["waiting"], counts["incomplete"], reasons)

    def complete_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if self.state_of(r)[0] == "complete"]

    @staticmethod
    def snapshot_hash(rows: list[dict[str, Any]]) -> str:
        h = hashlib.sha256()
        for r in rows:
            h.update(json.dumps({k: (v.model_dump(mode="json") if v is not None and k != "scenario_id"
                                     else v) for k, v in r.items()}, sort_keys=True).encode())
        return h.hexdigest()[:16]
