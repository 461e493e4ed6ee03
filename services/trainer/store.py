"""Dataset store: one row per scenario, its parts upserted as they arrive (SQLite).

Pipeline rows hold the three topic payloads (``scenario.energy``, ``quality.results``,
``cost.results``) as received; imported rows hold a ready :class:`DatasetRecord`.  Every
write is an upsert by scenario id, so replays and re-imports change nothing.

A row is *complete* when it has energy whose window was fully covered by samples and a
quality score; only complete rows are ever trained on.  Because pipeline energy arrives as
``scenario.energy`` (the join's own output), a training row without power data cannot
exist - the failure of the previous project.

Training uses *snapshots*: the ordered set of complete records at one moment, identified
by the SHA-256 of their content.  Each snapshot is recorded (id, time, scenario ids) so a
model's metadata names exactly the data it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from schemas.cost_results import CostResult
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy

from .records import DatasetRecord, from_pipeline, state_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    scenario_id TEXT PRIMARY KEY,
    host TEXT,
    energy_json TEXT,
    quality_json TEXT,
    cost_json TEXT,
    updated_ns INTEGER
);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id TEXT PRIMARY KEY,
    created_ns INTEGER,
    n_records INTEGER,
    scenario_ids_json TEXT
);
"""


@dataclass(frozen=True)
class StoreStatus:
    complete: int
    waiting: int
    incomplete: int
    reasons: dict[str, int]
    by_origin: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"complete": self.complete, "waiting": self.waiting,
                "incomplete": self.incomplete, "reasons": self.reasons,
                "by_origin": self.by_origin}


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str  # 16 hex chars of the SHA-256 of the records' content
    records: list[DatasetRecord]


class DatasetStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(records)")}
        if "record_json" not in cols:  # stores written before imports existed
            self._db.execute("ALTER TABLE records ADD COLUMN record_json TEXT")
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def _upsert(self, sid: str, host: str, column: str, payload: str, now_ns: int) -> None:
        assert column in ("energy_json", "quality_json", "cost_json", "record_json")
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

    def put_record(self, r: DatasetRecord, now_ns: int = 0) -> None:
        """Upsert an imported record (replaces an earlier import of the same id)."""
        self._upsert(r.scenario_id, r.host, "record_json", r.model_dump_json(), now_ns)

    def get_record(self, scenario_id: str) -> DatasetRecord | None:
        for sid, rec, _state, _why in self.entries():
            if sid == scenario_id:
                return rec
        return None

    def entries(self) -> list[tuple[str, DatasetRecord | None, str, str]]:
        """Every row as (scenario_id, record or None, state, reason), by scenario id."""
        with self._lock:
            cur = self._db.execute(
                "SELECT scenario_id, energy_json, quality_json, cost_json, record_json "
                "FROM records ORDER BY scenario_id")
            raw = cur.fetchall()
        out = []
        for sid, e, q, c, r in raw:
            if r:
                rec: DatasetRecord | None = DatasetRecord.model_validate_json(r)
                # a pipeline part arriving later for an imported id completes it
                if rec is not None and rec.vmaf is None and q:
                    qr = QualityResult.model_validate_json(q)
                    rec = rec.model_copy(update={"vmaf": qr.vmaf, "vmaf_model": qr.vmaf_model})
            else:
                rec = from_pipeline(
                    ScenarioEnergy.model_validate_json(e) if e else None,
                    QualityResult.model_validate_json(q) if q else None,
                    CostResult.model_validate_json(c) if c else None)
            state, why = state_of(rec)
            out.append((sid, rec, state, why))
        return out

    def status(self) -> StoreStatus:
        counts = {"complete": 0, "waiting": 0, "incomplete": 0}
        reasons: dict[str, int] = {}
        origins: dict[str, int] = {}
        for _sid, rec, state, why in self.entries():
            counts[state] += 1
            if state != "complete":
                reasons[why] = reasons.get(why, 0) + 1
            o = rec.origin if rec else "pipeline"
            origins[o] = origins.get(o, 0) + 1
        return StoreStatus(counts["complete"], counts["waiting"], counts["incomplete"],
                           reasons, origins)

    def complete_records(self) -> list[DatasetRecord]:
        return [rec for _s, rec, state, _w in self.entries()
                if state == "complete" and rec is not None]

    def snapshot(self, now_ns: int = 0) -> Snapshot:
        """Freeze the complete records; the id is recorded so models can cite it."""
        recs = self.complete_records()
        sid = snapshot_hash(recs)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO snapshots VALUES (?,?,?,?)",
                (sid, now_ns, len(recs), json.dumps([r.scenario_id for r in recs])))
        return Snapshot(sid, recs)

    def snapshots(self) -> list[dict[str, object]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT snapshot_id, created_ns, n_records FROM snapshots ORDER BY created_ns")
            return [{"snapshot_id": a, "created_ns": b, "n_records": c}
                    for a, b, c in cur.fetchall()]


def snapshot_hash(records: list[DatasetRecord]) -> str:
    """Content hash of an ordered record set (16 hex chars of SHA-256)."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.scenario_id):
        h.update(r.model_dump_json().encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
