"""Predictions from the registry's models (hash-checked on load), with intervals."""

from __future__ import annotations

import math
import statistics
from typing import Any

from schemas.scenario_events import EncodeSettings, HardwareInfo

from .advisor import Estimate
from .model import TARGETS, predict_one, settings_family
from .records import DatasetRecord
from .registry import LoadedModel, ModelRegistry


class RegistryPredictor:
    """Newest model per target for the hardware class (else the global one)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._cache: dict[str, LoadedModel] = {}

    def model(self, target: str, hardware_class: str | None) -> LoadedModel | None:
        meta = self.registry.latest_meta(target, hardware_class)
        if meta is None:
            return None
        mid = meta["model_id"]
        if mid not in self._cache:
            self._cache[mid] = self.registry.load(mid)
        return self._cache[mid]

    def predict(self, target: str, settings: EncodeSettings,
                hardware: HardwareInfo | None) -> Estimate | None:
        lm = self.model(target, hardware.hardware_class if hardware else None)
        if lm is None:
            return None
        point = predict_one(lm.pipeline, settings, hardware)
        if TARGETS[target].log:
            point = max(point, 0.0)
        iv = lm.meta.get("interval")
        lo = hi = None
        if iv:
            if iv["log_scale"]:
                f = math.exp(iv["half_width"])
                lo, hi = point / f, point * f
            else:
                lo, hi = point - iv["half_width"], point + iv["half_width"]
        return Estimate(point, lo, hi, lm.meta["model_id"])


def predict_settings(p: RegistryPredictor, s: EncodeSettings, hw: HardwareInfo | None,
                     records: list[DatasetRecord] | None = None) -> dict[str, Any]:
    """Every target for one settings, labelled; plus the measured means when the dataset
    holds runs of exactly these settings."""
    out: dict[str, Any] = {"settings": s.model_dump(exclude_none=True), "predicted": {},
                           "measured": None}
    for t, spec in TARGETS.items():
        est = p.predict(t, s, hw)
        if est is None:
            out["predicted"][t] = None
            continue
        lm = p.model(t, hw.hardware_class if hw else None)
        meta = lm.meta if lm else {}
        out["predicted"][t] = {
            "value": est.value, "unit": spec.unit, "interval": [est.low, est.high],
            "interval_level": (meta.get("interval") or {}).get("level"),
            "interval_measured_coverage": (meta.get("interval") or {}).get("measured_coverage"),
            "model_id": est.model_id, "basis": "predicted",
            "trained_on_energy_basis": meta.get("energy_basis_counts"),
            "cv_mape": (meta.get("cv") or {}).get("mape")}
    e = out["predicted"].get("energy_j_per_content_s")
    if e and s.fps:
        f = s.fps * s.streams
        out["predicted"]["energy_j_per_frame"] = {
            **e, "value": e["value"] / f, "unit": "J/frame",
            "interval": [x / f if x is not None else None for x in e["interval"]]}
    if records:
        fam = settings_family(s)
        same = [r for r in records if settings_family(r.settings) == fam
                and r.energy_j is not None and r.settings.duration_s > 0]
        if same:
            out["measured"] = {
                "runs": len(same),
                "energy_j_per_content_s": statistics.fmean(
                    r.energy_j / r.settings.duration_s for r in same),  # type: ignore[operator]
                "energy_basis": sorted({r.energy_basis or "unknown" for r in same}),
                "mean_power_w": _m([r.mean_power_w for r in same]),
                "vmaf": _m([r.vmaf for r in same]),
                "encode_fps": _m([r.encode_fps for r in same])}
    return out


def _m(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.fmean(v) if v else None
