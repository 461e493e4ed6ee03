"""Features, targets, candidate models, grouped cross-validation and conformal intervals.

Pure functions over :class:`DatasetRecord` lists (scikit-learn does the fitting).

* **Targets**: energy per second of content (J/s), mean power (W), VMAF, encode speed
  (frames per wall second).  Energy per frame is derived (J/s ÷ fps) by the advisor.
* **Features**: pixel rate, resolution, fps, bitrate / bits per pixel, CRF, rate control,
  codec, preset (also as a 0..1 slowness rank), streams, threads, CPU model and logical
  CPUs of the host.
* **Candidates**: ``linear`` (ridge on the raw target - the plain baseline),
  ``linear_log`` (ridge on log target, for positive multiplicative targets) and
  ``gradient_boosting``.  The one with the lowest grouped-CV MAE wins.
* **Grouped CV** holds out whole groups: source clips when the data has >= 3 distinct
  clips (does the model generalise to unseen content?), otherwise settings families
  (repeated runs of the same settings are held out together).
* **Intervals**: split-conformal on the out-of-fold residuals (CV+ style): half-width =
  the ceil((n+1)(1-alpha))-th smallest |residual| (in log space for positive targets, so
  the interval is multiplicative).  Its coverage is *measured* by leaving each fold out:
  the half-width computed from the other folds' residuals is checked on the held-out fold.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from schemas.scenario_events import EncodeSettings, HardwareInfo

from .records import DatasetRecord

NUMERIC = ["log_pixel_rate", "log_pixels", "log_fps", "log_bitrate_kbps", "log_bpp", "crf",
           "is_crf", "preset_slowness", "streams", "threads", "log_logical_cpus"]
CATEGORICAL = ["codec", "preset", "rate_control", "cpu_model"]
FEATURES = NUMERIC + CATEGORICAL


@dataclass(frozen=True)
class TargetSpec:
    unit: str
    log: bool  # positive, multiplicative target: fit/interval in log space
    value: Callable[[DatasetRecord], float | None]
    #: MAPE denominator floor: |y| below it counts as the floor (VMAF near 0 would explode)
    mape_floor: float = 1e-9


def _energy_per_s(r: DatasetRecord) -> float | None:
    if r.energy_j is None or r.settings.duration_s <= 0:
        return None
    return r.energy_j / r.settings.duration_s


#: target name → spec.  Names are stable: model.updates keys and metrics use them.
TARGETS: dict[str, TargetSpec] = {
    "energy_j_per_content_s": TargetSpec("J/s", True, _energy_per_s),
    "mean_power_w": TargetSpec("W", True, lambda r: r.mean_power_w),
    "vmaf": TargetSpec("VMAF", False, lambda r: r.vmaf, mape_floor=10.0),
    "encode_fps": TargetSpec("frames/s", True, lambda r: r.encode_fps),
}

INTERVAL_LEVEL = 0.9


class NotEnoughData(ValueError):
    """Training was asked for but the dataset cannot support it; the message says why."""


_X26X = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
         "veryslow", "placebo"]


def preset_slowness(codec: str, preset: str | None) -> float:
    """0 = the encoder's fastest preset, 1 = its slowest; 0.5 when unknown."""
    if not preset:
        return 0.5
    p = preset.lower()
    if p in _X26X:
        return _X26X.index(p) / (len(_X26X) - 1)
    if p.startswith("p") and p[1:].isdigit() and "nvenc" in codec:  # NVENC p1 (fast)..p7
        return (int(p[1:]) - 1) / 6
    if p.isdigit():
        n = int(p)
        if "svt" in codec or "av1" in codec:  # SVT-AV1 0 (slow)..13 (fast)
            return max(0.0, 1 - n / 13)
        if "aom" in codec or "vpx" in codec:  # cpu-used 0 (slow)..8
            return max(0.0, 1 - n / 8)
    return 0.5


def features_of(s: EncodeSettings, hw: HardwareInfo | None) -> dict[str, Any]:
    """Feature dict for one encode; only what is known *before* encoding."""
    fps = s.fps or 1.0
    pixels = max(1, s.width * s.height)
    pixel_rate = pixels * fps * s.streams
    cpus = hw.logical_cpus if hw else 0
    return {
        "log_pixel_rate": math.log10(pixel_rate),
        "log_pixels": math.log10(pixels),
        "log_fps": math.log10(fps),
        "log_bitrate_kbps": math.log10(s.bitrate_kbps) if s.bitrate_kbps else 0.0,
        "log_bpp": math.log10(s.bitrate_kbps * 1000 / (pixels * fps)) if s.bitrate_kbps else 0.0,
        "crf": float(s.crf) if s.crf is not None else 0.0,
        "is_crf": 1.0 if s.crf is not None else 0.0,
        "preset_slowness": preset_slowness(s.codec, s.preset),
        "streams": float(s.streams),
        "threads": float(s.threads or cpus),
        "log_logical_cpus": math.log10(cpus) if cpus else 0.0,
        "codec": s.codec,
        "preset": s.preset or "default",
        "rate_control": s.rate_control,
        "cpu_model": hw.cpu_model if hw else "unknown",
    }


def settings_family(s: EncodeSettings) -> str:
    """Group key: repeated runs of the same settings are held out together."""
    rate = f"crf{s.crf}" if s.crf is not None else f"b{s.bitrate_kbps}"
    return f"{s.codec}/{s.preset}/{s.width}x{s.height}@{s.fps}/{rate}/x{s.streams}"


def choose_grouping(records: list[DatasetRecord]) -> str:
    clips = {r.clip for r in records if r.clip}
    if len(clips) >= 3 and all(r.clip for r in records):
        return "source_clip"
    return "settings_family"


def groups_of(records: list[DatasetRecord], grouping: str) -> list[str]:
    if grouping == "source_clip":
        return [r.clip for r in records]
    return [settings_family(r.settings) for r in records]


def to_array(X: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([[x[f] for f in FEATURES] for x in X], dtype=object)


def _pre(scale: bool) -> ColumnTransformer:
    return ColumnTransformer([
        ("num", StandardScaler() if scale else "passthrough", list(range(len(NUMERIC)))),
        ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(len(NUMERIC), len(FEATURES)))),
    ])


def _log_target(est: Any) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(regressor=est, func=np.log, inverse_func=np.exp,
                                      check_inverse=False)


def make_candidates(log_target: bool) -> dict[str, Any]:
    """Candidate estimators, from the plain linear baseline to gradient boosting."""
    lin = Pipeline([("pre", _pre(True)), ("m", Ridge(alpha=1.0))])
    gbr = Pipeline([("pre", _pre(False)), ("m", GradientBoostingRegressor(
        n_estimators=150, max_depth=3, learning_rate=0.05, subsample=1.0, random_state=0))])
    out: dict[str, Any] = {"linear": lin}
    if log_target:
        out["linear_log"] = _log_target(clone(lin))
        out["gradient_boosting"] = _log_target(gbr)
    else:
        out["gradient_boosting"] = gbr
    return out


@dataclass
class CvResult:
    mae: float
    mape: float
    folds: int
    grouping: str
    oof: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    fold_of: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=int))


def grouped_cv(model: Any, X: np.ndarray, y: np.ndarray, groups: list[str],
               grouping: str, mape_floor: float = 1e-9) -> CvResult:
    """Out-of-fold predictions with GroupKFold (up to 5 folds); MAE and MAPE over them."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise NotEnoughData(f"grouped cross-validation needs >= 2 groups ({grouping}), "
                            f"have {n_groups}")
    folds = min(5, n_groups)
    oof = np.zeros(len(y))
    fold_of = np.zeros(len(y), dtype=int)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=folds).split(X, y, groups)):
        m = clone(model).fit(X[tr], y[tr])
        oof[te] = m.predict(X[te])
        fold_of[te] = k
    err = np.abs(oof - y)
    mape = float(np.mean(err / np.maximum(np.abs(y), mape_floor)))
    return CvResult(float(np.mean(err)), mape, folds, grouping, oof, fold_of)


def conformal_quantile(residuals: np.ndarray, level: float) -> float | None:
    """Split-conformal half-width: the ceil((n+1)·level)-th smallest residual, or None when
    there are too few residuals for that level (n < level/(1-level))."""
    n = len(residuals)
    k = math.ceil((n + 1) * level)
    if n == 0 or k > n:
        return None
    return float(np.sort(residuals)[k - 1])


@dataclass
class Interval:
    level: float
    half_width: float  # in log space (multiplicative) when log_scale, else target units
    log_scale: bool
    measured_coverage: float | None  # leave-one-fold-out coverage; None if not measurable
    coverage_n: int

    def bounds(self, point: float) -> tuple[float, float]:
        if self.log_scale:
            f = math.exp(self.half_width)
            return point / f, point * f
        return point - self.half_width, point + self.half_width


def interval_from_cv(cv: CvResult, y: np.ndarray, log_scale: bool,
                     level: float = INTERVAL_LEVEL) -> Interval | None:
    if log_scale:
        res = np.abs(np.log(np.maximum(cv.oof, 1e-12)) - np.log(np.maximum(y, 1e-12)))
    else:
        res = np.abs(cv.oof - y)
    q = conformal_quantile(res, level)
    if q is None:
        return None
    hits, n = 0, 0
    for k in np.unique(cv.fold_of):
        qk = conformal_quantile(res[cv.fold_of != k], level)
        if qk is None:
            continue
        held = res[cv.fold_of == k]
        hits += int(np.sum(held <= qk))
        n += len(held)
    return Interval(level, q, log_scale, hits / n if n else None, n)


@dataclass
class TrainedModel:
    target: str
    hardware: str  # hardware class, or "global"
    algorithm: str
    cv: CvResult
    baseline_cv: CvResult | None  # the plain linear baseline
    candidates: dict[str, dict[str, float]]  # name → {mae, mape}
    n_samples: int
    pipeline: Any
    interval: Interval | None
    cpu_models: list[str]
    #: energy basis of the training records ({"measured": n, "estimated": m})
    basis_counts: dict[str, int] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return TARGETS[self.target].unit


def dataset_xy(records: list[DatasetRecord], target: str
               ) -> tuple[list[DatasetRecord], np.ndarray, np.ndarray]:
    spec = TARGETS[target]
    keep = []
    for r in records:
        v = spec.value(r)
        if v is None or not math.isfinite(v) or (spec.log and v <= 0):
            continue
        keep.append((r, v))
    rows = [r for r, _ in keep]
    X = to_array([features_of(r.settings, r.hardware) for r in rows])
    y = np.asarray([v for _, v in keep], dtype=float)
    return rows, X, y


def train_target(records: list[DatasetRecord], target: str, min_rows: int = 4,
                 hardware: str = "global") -> TrainedModel:
    """Fit every candidate, pick the lowest grouped-CV MAE, refit it on all rows."""
    spec = TARGETS[target]
    rows, X, y = dataset_xy(records, target)
    if len(rows) < min_rows:
        raise NotEnoughData(f"{len(rows)} records with a {target} value"
                            f"{'' if hardware == 'global' else ' on ' + hardware}; "
                            f"training needs at least {min_rows}")
    grouping = choose_grouping(rows)
    groups = groups_of(rows, grouping)
    scores = {name: grouped_cv(m, X, y, groups, grouping, spec.mape_floor)
              for name, m in make_candidates(spec.log).items()}
    best = min(scores, key=lambda k: scores[k].mae)
    final = make_candidates(spec.log)[best].fit(X, y)
    return TrainedModel(
        target=target, hardware=hardware, algorithm=best, cv=scores[best],
        baseline_cv=scores.get("linear"),
        candidates={k: {"mae": v.mae, "mape": v.mape} for k, v in scores.items()},
        n_samples=len(rows), pipeline=final,
        interval=interval_from_cv(scores[best], y, spec.log),
        cpu_models=sorted({r.hardware.cpu_model for r in rows if r.hardware}),
        basis_counts=dict(Counter(r.energy_basis or "unknown" for r in rows)))


def train_all(records: list[DatasetRecord], min_rows: int = 4,
              targets: list[str] | None = None
              ) -> tuple[list[TrainedModel], dict[str, str]]:
    """A global model per target, plus one per hardware class when the data holds more
    than one class (with one class the global model *is* that class's model).

    Returns (models, skipped) - skipped maps "target@hardware" to the reason."""
    models: list[TrainedModel] = []
    skipped: dict[str, str] = {}
    classes = sorted({r.hardware_class for r in records})
    for target in targets or list(TARGETS):
        scopes = [("global", records)]
        if len(classes) > 1:
            scopes += [(c, [r for r in records if r.hardware_class == c]) for c in classes]
        for hw, recs in scopes:
            try:
                models.append(train_target(recs, target, min_rows, hw))
            except NotEnoughData as e:
                skipped[f"{target}@{hw}"] = str(e)
    return models, skipped


def predict_one(tm_pipeline: Any, s: EncodeSettings, hw: HardwareInfo | None) -> float:
    return float(tm_pipeline.predict(to_array([features_of(s, hw)]))[0])
