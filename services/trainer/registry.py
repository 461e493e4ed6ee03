"""Registry of versioned models: files plus an index that records what each file is.

Every model file is written by the registry, which records its SHA-256 (with the target,
hardware class, features, grouped-CV metrics, interval and the data snapshot id) in an
SQLite index next to the files.  :meth:`ModelRegistry.load` hashes the file *before*
unpickling it and refuses any file whose bytes are not the ones it wrote - a joblib/pickle
file can run code when loaded, so a file we did not write is never opened by pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from .model import FEATURES, TrainedModel


class UntrustedModel(ValueError):
    """The file is not one the registry wrote (unknown, or its bytes changed)."""


@dataclass(frozen=True)
class LoadedModel:
    meta: dict[str, Any]
    pipeline: Any

    @property
    def target(self) -> str:
        return str(self.meta["target"])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    hardware TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    trained_at_ns INTEGER NOT NULL,
    meta_json TEXT NOT NULL
);
"""


def _cv_dict(cv: Any) -> dict[str, Any] | None:
    if cv is None:
        return None
    return {"mae": cv.mae, "mape": cv.mape, "folds": cv.folds, "grouping": cv.grouping}


def metadata_of(tm: TrainedModel, snapshot_id: str, trained_at_ns: int) -> dict[str, Any]:
    iv = tm.interval
    return {
        "target": tm.target, "unit": tm.unit, "algorithm": tm.algorithm,
        "hardware": tm.hardware, "features": FEATURES, "n_samples": tm.n_samples,
        "cv": _cv_dict(tm.cv), "baseline_cv": _cv_dict(tm.baseline_cv),
        "candidates": tm.candidates,
        "interval": None if iv is None else {
            "level": iv.level, "half_width": iv.half_width, "log_scale": iv.log_scale,
            "measured_coverage": iv.measured_coverage, "coverage_n": iv.coverage_n,
            "method": "split-conformal on grouped out-of-fold residuals"},
        "snapshot_id": snapshot_id, "cpu_models": tm.cpu_models,
        "energy_basis_counts": tm.basis_counts,
        "trained_at_ns": trained_at_ns,
    }


class ModelRegistry:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.dir / "registry.sqlite"), check_same_thread=False)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def register(self, tm: TrainedModel, snapshot_id: str, trained_at_ns: int
                 ) -> dict[str, Any]:
        """Write the model file, record its hash and metadata; returns the metadata
        (with model_id, path and sha256)."""
        version = self._next_version(tm.target, tm.hardware)
        model_id = f"{tm.target}.{tm.hardware}.v{version}"
        path = self.dir / f"{model_id}.joblib"
        joblib.dump({"pipeline": tm.pipeline, "features": FEATURES, "target": tm.target}, path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = metadata_of(tm, snapshot_id, trained_at_ns)
        meta.update(model_id=model_id, version=version, path=str(path), sha256=sha)
        with self._lock, self._db:
            self._db.execute("INSERT INTO models VALUES (?,?,?,?,?,?,?)",
                             (model_id, tm.target, tm.hardware, str(path), sha, trained_at_ns,
                              json.dumps(meta)))
        return meta

    def _next_version(self, target: str, hardware: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM models WHERE target=? AND hardware=?",
                                   (target, hardware)).fetchone()
        return int(row[0]) + 1

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT meta_json FROM models ORDER BY trained_at_ns, model_id")
            return [json.loads(m) for (m,) in cur.fetchall()]

    def latest_meta(self, target: str, hardware_class: str | None = None
                    ) -> dict[str, Any] | None:
        """Newest model for the hardware class, else the newest global one."""
        for hw in ([hardware_class] if hardware_class else []) + ["global"]:
            with self._lock:
                row = self._db.execute(
                    "SELECT meta_json FROM models WHERE target=? AND hardware=? "
                    "ORDER BY trained_at_ns DESC, rowid DESC LIMIT 1", (target, hw)).fetchone()
            if row:
                return dict(json.loads(row[0]))
        return None

    def load(self, model_id: str) -> LoadedModel:
        with self._lock:
            row = self._db.execute("SELECT path, sha256, meta_json FROM models WHERE model_id=?",
                                   (model_id,)).fetchone()
        if row is None:
            raise UntrustedModel(f"{model_id}: not in the registry")
        return self.load_path(row[0], row[1], json.loads(row[2]))

    def load_path(self, path: str | Path, expected_sha256: str,
                  meta: dict[str, Any] | None = None) -> LoadedModel:
        p = Path(path)
        known = {m["path"]: m for m in self.list()}
        if str(p) not in known or known[str(p)]["sha256"] != expected_sha256:
            raise UntrustedModel(f"refusing to load {p}: the registry did not write it")
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected_sha256:
            raise UntrustedModel(f"refusing to load {p}: SHA-256 does not match the registry "
                                 "(file changed after it was written)")
        obj = joblib.load(io.BytesIO(data))  # the verified bytes, not a second read
        return LoadedModel(meta or known[str(p)], obj["pipeline"])

    def load_latest(self, target: str, hardware_class: str | None = None
                    ) -> LoadedModel | None:
        meta = self.latest_meta(target, hardware_class)
        return None if meta is None else self.load(meta["model_id"])
