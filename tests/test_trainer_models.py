"""Training: clear messages on empty/partial data, grouped CV that really holds out groups,
conformal intervals with measured coverage, per-hardware models, the hash-checked
registry, retraining on drift."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from schemas.model_updates import ModelUpdate
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings, HardwareInfo
from services.trainer.app import TrainerConfig, TrainerProcessor, train_and_register
from services.trainer.importers import parse_measurements
from services.trainer.model import (
    NotEnoughData,
    conformal_quantile,
    dataset_xy,
    groups_of,
    train_all,
    train_target,
)
from services.trainer.records import DatasetRecord, hardware_class_of
from services.trainer.registry import ModelRegistry, UntrustedModel
from services.trainer.store import DatasetStore

PCS2024 = (Path(__file__).parent.parent / "services" / "trainer" / "data"
           / "katsenou_pcs2024_x265.csv")
NS = 1_766_000_000_000_000_000


def hw(cpu: str, n: int) -> HardwareInfo:
    return HardwareInfo(cpu_model=cpu, logical_cpus=n, arch="x86_64",
                        hardware_class=hardware_class_of(cpu, n, "x86_64"))


def synth(n_clips: int = 4, hardware: HardwareInfo | None = None, scale: float = 1.0,
          seed: int = 0) -> list[DatasetRecord]:
    """x264 records: energy ∝ pixel rate × preset cost, VMAF rising with bitrate."""
    rnd = random.Random(seed)
    hw_ = hardware or hw("Test CPU A", 8)
    out = []
    presets = {"veryfast": 1.0, "medium": 2.5, "slow": 4.0}
    for c in range(n_clips):
        for (w, h) in ((1280, 720), (1920, 1080)):
            for p, cost in presets.items():
                for br in (1000, 3000, 6000):
                    s = EncodeSettings(codec="libx264", preset=p, bitrate_kbps=br, width=w,
                                       height=h, fps=30, duration_s=10, source=f"clip{c}")
                    e = scale * 2e-7 * w * h * 30 * 10 * cost * rnd.uniform(0.9, 1.1)
                    wall = 10 * cost * w * h / (1920 * 1080)
                    vmaf = min(99.0, 55 + 25 * np.log10(br / 500) * (1 + 0.05 * cost)
                               - 5 * (w / 1920) + rnd.uniform(-1, 1))
                    out.append(DatasetRecord(
                        scenario_id=f"s-{hw_.hardware_class}-{c}-{w}-{p}-{br}-{seed}",
                        origin="import", host="h", settings=s, hardware=hw_, clip=f"clip{c}",
                        wall_s=wall, energy_j=e, energy_basis="measured", energy_source="rapl",
                        mean_power_w=e / wall, frames=300, encode_fps=300 / wall,
                        bitrate_kbps=br * rnd.uniform(0.95, 1.05), vmaf=vmaf,
                        carbon_g=e / 3.6e6 * 400, cost_total=e / 3.6e6 * 0.2))
    return out


def energy(sid: str, settings: EncodeSettings, complete: bool = True) -> ScenarioEnergy:
    return ScenarioEnergy(
        scenario_id=sid, host="h", settings=settings, start_ns=NS, end_ns=NS + 10**10,
        wall_s=10, energy_j=100, zones_j={"package-0": 100}, basis="estimated",
        sources=["estimate"], scope="component", mean_power_w=10,
        coverage=1.0 if complete else 0.4, max_gap_s=0, complete=complete, n_samples=10,
        emitted_by="watermark" if complete else "timeout")


def test_empty_dataset_gives_a_clear_message_not_a_crash(data_dir: Path) -> None:
    proc = TrainerProcessor(CollectorRegistry(), TrainerConfig(data_dir=str(data_dir),
                                                               retrain_every=0))
    with pytest.raises(NotEnoughData, match=r"0 complete records, need 4 .*no records"):
        proc.train()
    proc.train_requested = True
    assert proc.tick(time.time_ns()) == []
    assert proc.last_error and "0 complete records" in proc.last_error
    with pytest.raises(NotEnoughData, match="0 records with a vmaf value"):
        train_target([], "vmaf")


def test_partial_dataset_says_what_is_missing(data_dir: Path) -> None:
    proc = TrainerProcessor(CollectorRegistry(), TrainerConfig(data_dir=str(data_dir),
                                                               retrain_every=0))
    s = EncodeSettings(codec="libx264", preset="fast", bitrate_kbps=500, width=640, height=360,
                       fps=25, duration_s=2)
    proc.store.put_energy(energy("a", s))  # no quality yet
    proc.store.put_energy(energy("b", s, complete=False))
    proc.store.put_energy(energy("c", EncodeSettings(codec="idle")))
    for r in synth(1)[:2]:
        proc.store.put_record(r)
    proc.train_requested = True
    assert proc.tick(time.time_ns()) == []
    msg = proc.last_error or ""
    assert "2 complete records, need 4" in msg
    assert "1 waiting for quality" in msg and "1 energy window only 40% covered" in msg
    assert "1 idle baseline" in msg

    # enough records overall, but a target that cannot be grouped is skipped with a reason
    one_family = [r.model_copy(update={"clip": "", "scenario_id": f"x{i}"})
                  for i, r in enumerate(synth(1)[:1] * 5)]
    models, skipped = train_all(one_family)
    assert not models and all("needs >= 2 groups" in v for v in skipped.values())


def test_grouped_cv_holds_out_whole_groups() -> None:
    recs = synth(5)
    tm = train_target(recs, "energy_j_per_content_s")
    assert tm.cv.grouping == "source_clip" and tm.cv.folds == 5
    rows, _X, _y = dataset_xy(recs, "energy_j_per_content_s")
    fold_of_group: dict[str, set[int]] = {}
    for g, k in zip(groups_of(rows, "source_clip"), tm.cv.fold_of, strict=True):
        fold_of_group.setdefault(g, set()).add(int(k))
    assert all(len(v) == 1 for v in fold_of_group.values())  # never split across folds
    # one clip only: settings families are held out instead
    assert train_target(synth(1), "vmaf").cv.grouping == "settings_family"


def test_conformal_quantile() -> None:
    r = np.arange(1, 20, dtype=float)  # 19 residuals: ceil(20*0.9)=18th smallest
    assert conformal_quantile(r, 0.9) == 18.0
    assert conformal_quantile(r[:4], 0.9) is None  # too few for a 90 % interval


def test_published_dataset_models_and_interval_coverage() -> None:
    res = parse_measurements(PCS2024.read_text(), "csv", "pcs")
    models, skipped = train_all(res.records)
    assert not skipped
    by = {m.target: m for m in models}
    assert set(by) == {"energy_j_per_content_s", "mean_power_w", "vmaf", "encode_fps"}
    for m in models:
        assert m.cv.grouping == "source_clip" and m.n_samples == 90
        assert m.baseline_cv is not None and m.cv.mae <= m.baseline_cv.mae
        assert m.interval is not None and m.interval.coverage_n == 90
        # measured on held-out clips, the 90 % interval holds roughly as often as claimed
        assert m.interval.measured_coverage is not None
        assert 0.7 <= m.interval.measured_coverage <= 1.0
    # energy varies ~50x over the data; holding out whole clips, the model is far better
    # than predicting the mean
    _rows, _X, y = dataset_xy(res.records, "energy_j_per_content_s")
    assert by["energy_j_per_content_s"].cv.mae < 0.5 * float(np.mean(np.abs(y - y.mean())))


def test_models_per_hardware_class_plus_global(tmp_path: Path) -> None:
    a, b = hw("CPU A", 8), hw("CPU B", 32)
    recs = synth(3, a) + synth(3, b, scale=0.5, seed=1)
    models, _ = train_all(recs, targets=["energy_j_per_content_s"])
    assert sorted(m.hardware for m in models) == sorted(["global", a.hardware_class,
                                                         b.hardware_class])
    reg = ModelRegistry(tmp_path / "models")
    for m in models:
        reg.register(m, "snap", time.time_ns())
    assert reg.latest_meta("energy_j_per_content_s", b.hardware_class)["hardware"] == \
        b.hardware_class  # type: ignore[index]
    assert reg.latest_meta("energy_j_per_content_s", "other")["hardware"] == "global"  # type: ignore[index]


def test_registry_refuses_tampered_and_foreign_files(tmp_path: Path) -> None:
    tm = train_target(synth(2), "mean_power_w")
    reg = ModelRegistry(tmp_path / "models")
    meta = reg.register(tm, "snap1", time.time_ns())
    assert meta["model_id"] == "mean_power_w.global.v1" and meta["snapshot_id"] == "snap1"
    assert reg.register(tm, "snap2", time.time_ns())["version"] == 2
    good = reg.load(meta["model_id"])
    x = synth(1)[0]
    from services.trainer.model import predict_one
    assert predict_one(good.pipeline, x.settings, x.hardware) > 0

    p = Path(meta["path"])
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(UntrustedModel, match="SHA-256 does not match"):
        reg.load(meta["model_id"])
    foreign = tmp_path / "models" / "evil.joblib"
    foreign.write_bytes(b"not ours")
    with pytest.raises(UntrustedModel, match="did not write"):
        reg.load_path(foreign, meta["sha256"])
    with pytest.raises(UntrustedModel, match="not in the registry"):
        reg.load("nope")


def test_snapshot_is_recorded_in_model_metadata(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "d.sqlite")
    for r in synth(2):
        store.put_record(r)
    reg = ModelRegistry(tmp_path / "models")
    metas, _ = train_and_register(store, reg, 4, time.time_ns())
    snaps = store.snapshots()
    assert len(snaps) == 1 and snaps[0]["n_records"] == len(synth(2))
    assert {m["snapshot_id"] for m in metas} == {snaps[0]["snapshot_id"]}
    store.put_record(synth(1, seed=7)[0].model_copy(update={"scenario_id": "new"}))
    assert store.snapshot().snapshot_id != snaps[0]["snapshot_id"]


def test_retrains_on_drift_and_publishes_updates(data_dir: Path) -> None:
    reg = CollectorRegistry()
    proc = TrainerProcessor(reg, TrainerConfig(data_dir=str(data_dir), retrain_every=0,
                                               drift_factor=2.0, drift_min_records=3))
    for r in synth(3):
        proc.store.put_record(r)
    proc.train_requested = True
    outs = proc.tick(time.time_ns())
    updates = [ModelUpdate.from_bytes(o.value) for o in outs]
    assert {u.target for u in updates} == {"energy_j_per_content_s", "mean_power_w", "vmaf",
                                           "encode_fps"}
    assert all(u.interval is not None and u.version == 1 for u in updates)
    assert reg.get_sample_value("joulestream_trainer_dataset_records",
                                {"state": "complete"}) == len(synth(3))
    assert reg.get_sample_value("joulestream_trainer_model_cv_mape_ratio",
                                {"target": "vmaf"}) == pytest.approx(
        next(u.cv.mape for u in updates if u.target == "vmaf"))

    # same settings, a new host generation: 3x the energy → drift → retrain
    for r in synth(1, scale=3.0, seed=5)[:4]:
        proc.store.put_record(r.model_copy(update={"scenario_id": "d-" + r.scenario_id}))
    proc._dirty = True  # as after handle()
    outs = proc.tick(time.time_ns())
    assert outs, "drift did not trigger a retrain"
    assert reg.get_sample_value("joulestream_trainer_trainings_total",
                                {"outcome": "ok", "trigger": "drift"}) == 1
    assert (reg.get_sample_value("joulestream_trainer_model_drift_mape_ratio",
                                 {"target": "energy_j_per_content_s"}) or 0) > 0.5
    assert {ModelUpdate.from_bytes(o.value).version for o in outs} == {2}


def test_cli_dataset_status_and_train_messages(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import build_parser

    d = str(tmp_path / "t")
    args = build_parser().parse_args(["train", "--data-dir", d])
    assert args.fn(args) == 2
    assert "not training: 0 complete records, need 4" in capsys.readouterr().err
    store = DatasetStore(tmp_path / "t" / "dataset.sqlite")
    for r in synth(2):
        store.put_record(r)
    store.put_record(synth(1)[0].model_copy(update={"scenario_id": "nq", "vmaf": None}))
    args = build_parser().parse_args(["dataset", "status", "--data-dir", d])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert f"complete   {len(synth(2)):6d}" in out
    assert "1  imported without quality (no VMAF)" in out
    args = build_parser().parse_args(["train", "--data-dir", d])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "energy_j_per_content_s.global.v1" in out and "source_clip" not in out
