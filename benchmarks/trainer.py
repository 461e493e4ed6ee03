"""Trainer benchmark: fit time, prediction latency, grouped-CV error per target.

Datasets:
* ``pcs2024_x265`` - published RAPL measurements (Katsenou et al., PCS 2024; 6 clips ×
  3 resolutions × 5 CRF, services/trainer/data/katsenou_pcs2024_x265.csv), CV holds out
  whole clips.  Its figures are the headline ``cv``.
* ``demo`` - the complete records of a real demo run, when ``JOULESTREAM_BENCH_TRAINER_DATA``
  names a trainer data dir (e.g. ``demo-out/trainer``).
* ``synthetic_demo_like`` - otherwise: x264 records shaped like the demo's matrix from a
  fixed generator (energy ∝ pixel rate × preset cost, ±10 % noise).  SYNTHETIC: it checks
  the machinery, it says nothing about real encoders.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.scenario_events import EncodeSettings, HardwareInfo
from services.trainer.advisor import advise
from services.trainer.importers import parse_measurements
from services.trainer.model import TrainedModel, train_all
from services.trainer.predictor import RegistryPredictor
from services.trainer.records import DatasetRecord
from services.trainer.registry import ModelRegistry
from services.trainer.store import DatasetStore

DATA = Path(__file__).parent.parent / "services" / "trainer" / "data"


def synthetic_demo_like(seed: int = 0) -> list[DatasetRecord]:
    rnd = random.Random(seed)
    hw = HardwareInfo(cpu_model="synthetic", logical_cpus=2, hardware_class="synthetic")
    out = []
    for clip in range(3):
        for (w, h) in ((640, 360), (1280, 720)):
            for preset, cost in (("ultrafast", 0.5), ("veryfast", 1.0), ("medium", 2.6)):
                for br in (400, 800, 1500, 3000):
                    for rep in range(2):
                        s = EncodeSettings(codec="libx264", preset=preset, bitrate_kbps=br,
                                           width=w, height=h, fps=25, duration_s=4,
                                           source=f"clip{clip}")
                        cpu_s = 4 * 25 * w * h * cost * 4e-8 * rnd.uniform(0.9, 1.1)
                        e = 12.0 * cpu_s  # CPU-time estimate, W per busy CPU
                        wall = cpu_s / 1.8
                        vmaf = min(99.0, 30 + 22 * math.log10(br * 1000 / (w * h * 25) * 100)
                                   + 3 * cost + rnd.uniform(-1.5, 1.5))
                        out.append(DatasetRecord(
                            scenario_id=f"syn-{clip}-{w}-{preset}-{br}-{rep}", origin="import",
                            host="synthetic", settings=s, hardware=hw, clip=f"clip{clip}",
                            wall_s=wall, energy_j=e, energy_basis="estimated",
                            energy_source="synthetic", mean_power_w=e / wall, cpu_s=cpu_s,
                            frames=100, encode_fps=100 / wall, bitrate_kbps=br, vmaf=vmaf))
    return out


def _summary(models: list[TrainedModel], fit_s: float) -> dict[str, Any]:
    cv = {}
    for m in models:
        if m.hardware != "global":
            continue
        cv[m.target] = {
            "mae": round(m.cv.mae, 4), "mape": round(m.cv.mape, 4), "unit": m.unit,
            "algorithm": m.algorithm, "grouping": m.cv.grouping, "folds": m.cv.folds,
            "linear_baseline_mape": round(m.baseline_cv.mape, 4) if m.baseline_cv else None,
            "interval_level": m.interval.level if m.interval else None,
            "interval_measured_coverage": (round(m.interval.measured_coverage, 3)
                                           if m.interval and m.interval.measured_coverage
                                           is not None else None),
            "n": m.n_samples}
    return {"fit_s": round(fit_s, 3), "cv": cv}


def run(quick: bool = False) -> dict[str, Any]:
    datasets: dict[str, list[DatasetRecord]] = {}
    ext = parse_measurements((DATA / "katsenou_pcs2024_x265.csv").read_text(), "csv", "pcs")
    datasets["pcs2024_x265"] = ext.records
    demo_dir = os.environ.get("JOULESTREAM_BENCH_TRAINER_DATA")
    if demo_dir:
        datasets["demo"] = DatasetStore(Path(demo_dir) / "dataset.sqlite").complete_records()
    else:
        datasets["synthetic_demo_like"] = synthetic_demo_like()
    results: dict[str, Any] = {}
    trained: dict[str, list[TrainedModel]] = {}
    for name, recs in datasets.items():
        t0 = time.perf_counter()
        models, skipped = train_all(recs)
        results[name] = {**_summary(models, time.perf_counter() - t0), "records": len(recs),
                         "skipped": skipped}
        trained[name] = models

    # prediction latency: registry-loaded (hash-checked) models, one settings, all targets
    with tempfile.TemporaryDirectory() as d:
        reg = ModelRegistry(Path(d) / "models")
        for m in trained["pcs2024_x265"]:
            reg.register(m, "bench", time.time_ns())
        pred = RegistryPredictor(reg)
        s = EncodeSettings(codec="libx265", preset="medium", crf=28, width=1920, height=1080,
                           fps=30, duration_s=10)
        for t in ("energy_j_per_content_s", "vmaf"):  # warm the cache (loads, hash checks)
            pred.predict(t, s, None)
        n = 20 if quick else 200
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            for t in ("energy_j_per_content_s", "mean_power_w", "vmaf", "encode_fps"):
                pred.predict(t, s, None)
            lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        a = advise(datasets["pcs2024_x265"], pred, 80, 1920, 1080)
        advise_ms = (time.perf_counter() - t0) * 1000
        reg.close()
    head = results["pcs2024_x265"]
    return {
        "fit_s": head["fit_s"],
        "predict_ms": round(statistics.median(lat), 3),
        "predict_ms_p95": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 3),
        "advise_ms": round(advise_ms, 1),
        "advise_options_ranked": len(a.ranked),
        "cv": {t: {"mae": v["mae"], "mape": v["mape"]} for t, v in head["cv"].items()},
        "datasets": results,
        "notes": "cv = pcs2024_x265 (published RAPL measurements, whole clips held out); "
                 "predict_ms = all four targets for one settings; "
                 "synthetic_demo_like is generated, not measured",
    }
