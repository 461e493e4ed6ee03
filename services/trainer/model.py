"""Features, candidate models and grouped cross-validation (scikit-learn)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from schemas.scenario_events import EncodeSettings

NUMERIC = ["log_pixel_rate", "log_bitrate_kbps", "crf", "is_crf", "streams", "duration_s"]
CATEGORICAL = ["codec", "preset"]
FEATURES = NUMERIC + CATEGORICAL

#: target name → (unit, how to read it off a dataset row)
TARGETS: dict[str, str] = {
    "energy_j_per_content_s": "J/s",
    "mean_power_w": "W",
}


class NotEnoughData(ValueError):
    """Training was asked for but the dataset cannot support it; the message says why."""


def features_of(s: EncodeSettings) -> dict[str, Any]:
    pixel_rate = max(1.0, s.width * s.height * (s.fps or 1.0) * s.streams)
    return {
        "log_pixel_rate": float(np.log10(pixel_rate)),
        "log_bitrate_kbps": float(np.log10(s.bitrate_kbps)) if s.bitrate_kbps else 0.0,
        "crf": float(s.crf) if s.crf is not None else 0.0,
        "is_crf": 1.0 if s.crf is not None else 0.0,
        "streams": float(s.streams),
        "duration_s": float(s.duration_s),
        "codec": s.codec,
        "preset": s.preset or "default",
    }


def settings_family(s: EncodeSettings) -> str:
    """Group key for cross-validation: repeated runs of the same settings are held out
    together, so the score measures prediction for settings the model has not seen."""
    rate = f"crf{s.crf}" if s.crf is not None else f"b{s.bitrate_kbps}"
    return f"{s.codec}/{s.preset}/{s.width}x{s.height}@{s.fps}/{rate}/x{s.streams}"


def target_of(row: dict[str, Any], target: str) -> float:
    e = row["energy"]
    if target == "energy_j_per_content_s":
        return float(e.energy_j / max(e.settings.duration_s, 1e-9))
    if target == "mean_power_w":
        return float(e.mean_power_w)
    raise KeyError(target)


def _matrix(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    X = [features_of(r["energy"].settings) for r in rows]
    groups = [settings_family(r["energy"].settings) for r in rows]
    return X, groups


def make_candidates() -> dict[str, Pipeline]:
    def pre(scale: bool) -> ColumnTransformer:
        return ColumnTransformer([
            ("num", StandardScaler() if scale else "passthrough", list(range(len(NUMERIC)))),
            ("cat", OneHotEncoder(handle_unknown="ignore"),
             list(range(len(NUMERIC), len(FEATURES)))),
        ])
    return {
        "ridge": Pipeline([("pre", pre(True)), ("m", Ridge(alpha=1.0))]),
        "gradient_boosting": Pipeline([
            ("pre", pre(False)),
            ("m", GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05,
                                            random_state=0)),
        ]),
    }


def to_array(X: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([[x[f] for f in FEATURES] for x in X], dtype=object)


@dataclass
class CvResult:
    mae: float
    mape: float
    folds: int


def grouped_cv(model: Pipeline, X: np.ndarray, y: np.ndarray, groups: list[str]) -> CvResult:
    n_groups = len(set(groups))
    if n_groups < 2:
        raise NotEnoughData(f"grouped cross-validation needs >= 2 settings families, have "
                            f"{n_groups}")
    folds = min(5, n_groups)
    errs, perrs = [], []
    for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
        m = _clone(model).fit(X[tr], y[tr])
        pred = m.predict(X[te])
        errs.extend(np.abs(pred - y[te]))
        perrs.extend(np.abs(pred - y[te]) / np.maximum(np.abs(y[te]), 1e-9))
    return CvResult(float(np.mean(errs)), float(np.mean(perrs)), folds)


def _clone(model: Pipeline) -> Pipeline:
    from sklearn.base import clone

    return clone(model)  # type: ignore[no-any-return]


@dataclass
class TrainedModel:
    target: str
    algorithm: str
    cv: CvResult
    baseline_cv: CvResult | None
    n_samples: int
    pipeline: Pipeline


def train_target(rows: list[dict[str, Any]], target: str, min_rows: int = 4) -> TrainedModel:
    if len(rows) < min_rows:
        raise NotEnoughData(
            f"{len(rows)} complete records; training {target} needs at least {min_rows}")
    Xd, groups = _matrix(rows)
    X = to_array(Xd)
    y = np.asarray([target_of(r, target) for r in rows], dtype=float)
    scores = {name: grouped_cv(m, X, y, groups) for name, m in make_candidates().items()}
    best = min(scores, key=lambda k: scores[k].mae)
    final = make_candidates()[best].fit(X, y)
    return TrainedModel(target, best, scores[best], scores.get("ridge"), len(rows), final)


def save_model(tm: TrainedModel, directory: str | Path, dataset_hash: str) -> tuple[Path, str]:
    """Write the model with a metadata file holding its SHA-256; returns (path, sha256)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = d / f"{tm.target}-{stamp}-{dataset_hash[:8]}.joblib"
    joblib.dump({"pipeline": tm.pipeline, "features": FEATURES, "target": tm.target}, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {"target": tm.target, "algorithm": tm.algorithm, "sha256": sha,
            "cv": tm.cv.__dict__, "n_samples": tm.n_samples, "dataset_hash": dataset_hash,
            "features": FEATURES}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path, sha


def load_model(path: str | Path, expected_sha256: str) -> Any:
    """Load a model only if its bytes match the hash recorded when we wrote it."""
    p = Path(path)
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError(f"refusing to load {p}: SHA-256 does not match the registry")
    return joblib.load(p)
