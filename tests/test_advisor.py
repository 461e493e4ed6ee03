"""The advisor: its choice equals brute force over the data, the Pareto front is exactly
the non-dominated set, BD-rate is right on curves with a known answer, predictions fill
the gaps and say so; the HTTP API serves both."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from services.trainer.advisor import Option, advise, bd_rate, pareto_front
from services.trainer.api import AdvisorService, make_server
from services.trainer.app import train_and_register
from services.trainer.model import settings_family
from services.trainer.predictor import RegistryPredictor
from services.trainer.records import DatasetRecord
from services.trainer.registry import ModelRegistry
from services.trainer.store import DatasetStore
from tests.test_trainer_models import synth


def brute_force(records: list[DatasetRecord], min_vmaf: float, w: int, h: int,
                key: str) -> tuple[str, float]:
    """Independent re-computation: mean per settings family, filter, argmin."""
    fam: dict[str, list[DatasetRecord]] = defaultdict(list)
    for r in records:
        if (r.settings.width, r.settings.height) == (w, h):
            fam[settings_family(r.settings)].append(r)
    best: tuple[str, float] | None = None
    for f, rs in fam.items():
        if statistics.fmean(r.vmaf for r in rs) < min_vmaf:  # type: ignore[misc]
            continue
        v = statistics.fmean(getattr(r, key) / r.settings.duration_s for r in rs)
        if best is None or v < best[1]:
            best = (f, v)
    assert best is not None
    return best


@pytest.mark.parametrize("objective,key", [("energy", "energy_j"), ("carbon", "carbon_g"),
                                           ("cost", "cost_total")])
@pytest.mark.parametrize("min_vmaf", [65.0, 72.0, 78.0])
def test_choice_matches_brute_force(objective: str, key: str, min_vmaf: float) -> None:
    recs = synth(3)
    a = advise(recs, None, min_vmaf, 1920, 1080, objective=objective)  # type: ignore[arg-type]
    fam, value = brute_force(recs, min_vmaf, 1920, 1080, key)
    top = a.ranked[0]
    assert top.source == "measured" and top.objective_value == pytest.approx(value)
    s = top.settings
    assert fam.startswith(f"libx264/{s['preset']}/1920x1080@30.0/b{s['bitrate_kbps']}")
    assert all(o.vmaf >= min_vmaf for o in a.ranked)
    vals = [o.objective_value for o in a.ranked]
    assert vals == sorted(vals)


def test_unreachable_target_says_so() -> None:
    a = advise(synth(2), None, 99.9, 1920, 1080)
    assert a.ranked == [] and any("no option reaches VMAF 99.9" in n for n in a.notes)


def test_pareto_front_is_the_non_dominated_set() -> None:
    opts = advise(synth(3), None, 0, 1280, 720).pareto
    allopts = advise(synth(3), None, 0, 1280, 720, top=1000).ranked

    def vec(o: Option) -> tuple[float, float, float]:
        return (o.energy_j_per_content_s, -o.vmaf, o.bitrate_kbps or float("inf"))

    def dominates(p: Option, q: Option) -> bool:
        return all(x <= y for x, y in zip(vec(p), vec(q), strict=True)) and vec(p) != vec(q)

    front = {id(o) for o in pareto_front(allopts)}
    for q in allopts:
        assert (id(q) in front) == (not any(dominates(p, q) for p in allopts))
    assert [o.energy_j_per_content_s for o in opts] == sorted(
        o.energy_j_per_content_s for o in opts)


def test_bd_rate_known_answers() -> None:
    rates = [1000.0, 2000.0, 4000.0, 8000.0]
    q = [70.0, 80.0, 88.0, 94.0]
    for method in ("cubic", "pchip"):
        assert bd_rate(rates, q, [r * 0.8 for r in rates], q, method) == pytest.approx(-20)
        assert bd_rate(rates, q, [r * 1.25 for r in rates], q, method) == pytest.approx(25)
        assert bd_rate(rates, q, rates, q, method) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 4"):
        bd_rate(rates[:3], q[:3], rates, q)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(rates, q, rates, [x - 50 for x in q])


def test_bd_rate_between_encoders_in_advice() -> None:
    x264 = synth(1)
    x265 = [r.model_copy(update={
        "scenario_id": "x5" + r.scenario_id,
        "settings": r.settings.model_copy(update={"codec": "libx265"}),
        "bitrate_kbps": (r.bitrate_kbps or 0) * 0.7}) for r in x264]
    # anchor: the curve with most points; give x264/medium one extra point
    extra = x264[0].model_copy(update={"scenario_id": "extra", "settings": x264[0].settings
                                       .model_copy(update={"preset": "medium",
                                                           "bitrate_kbps": 12000}),
                                       "bitrate_kbps": 12000.0, "vmaf": 97.0})
    # 3 bitrates per preset are too few for BD-rate; add one more per curve
    more = []
    for r in x264 + x265:
        if r.settings.bitrate_kbps == 6000:
            more.append(r.model_copy(update={
                "scenario_id": r.scenario_id + "-hi",
                "settings": r.settings.model_copy(update={"bitrate_kbps": 9000}),
                "bitrate_kbps": (r.bitrate_kbps or 0) * 1.5, "vmaf": (r.vmaf or 0) + 2}))
    a = advise(x264 + x265 + more + [extra], None, 0, 1920, 1080)
    rows = {(b["anchor"], b["test"]): b for b in a.bd_rates}
    assert ("libx264/medium", "libx265/medium") in rows
    b = rows[("libx264/medium", "libx265/medium")]
    assert b["quality"] == "vmaf" and b["bd_rate_pct"] < -15  # x265 used ~30 % fewer bits


def test_predictions_fill_unmeasured_settings_and_say_so(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "d.sqlite")
    # 720p measured for all settings; 1080p only for veryfast
    for r in synth(3):
        if r.settings.height == 720 or r.settings.preset == "veryfast":
            store.put_record(r)
    reg = ModelRegistry(tmp_path / "models")
    train_and_register(store, reg, 4, time.time_ns())
    a = advise(store.complete_records(), RegistryPredictor(reg), 0, 1920, 1080, top=100)
    sources = {o.source for o in a.ranked}
    assert sources == {"measured", "predicted"}
    for o in a.ranked:
        if o.source == "measured":
            assert o.settings["preset"] == "veryfast" and o.runs >= 1 and not o.models
            assert o.energy_basis == "measured"
        else:
            assert o.settings["preset"] in ("medium", "slow") and o.runs == 0
            assert o.models["energy_j_per_content_s"].startswith("energy_j_per_content_s.")
            lo, hi = o.intervals["energy_j_per_content_s"]
            assert lo is not None and hi is not None
            assert lo < o.energy_j_per_content_s < hi
    # conservative: a predicted option must clear the target with its VMAF lower bound
    target = 75.0
    cons = advise(store.complete_records(), RegistryPredictor(reg), target, 1920, 1080,
                  conservative=True, top=100)
    assert all(o.intervals["vmaf"][0] >= target for o in cons.ranked if o.source == "predicted")


@pytest.fixture
def api(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = DatasetStore(tmp_path / "t" / "dataset.sqlite")
    for r in synth(3):
        store.put_record(r)
    train_and_register(store, ModelRegistry(tmp_path / "t" / "models"), 4, time.time_ns())
    svc = AdvisorService(tmp_path / "t")
    srv = make_server(svc, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_api(api: str) -> None:
    hwq = "cpu_model=Test+CPU+A&logical_cpus=8"
    r = httpx.get(f"{api}/v1/predict?codec=libx264&preset=medium&resolution=1920x1080&fps=30"
                  f"&bitrate_kbps=3000&{hwq}")
    assert r.status_code == 200
    body = r.json()
    e = body["predicted"]["energy_j_per_content_s"]
    assert e["basis"] == "predicted" and e["value"] > 0 and e["unit"] == "J/s"
    assert body["measured"]["runs"] == 3  # three clips measured these settings
    assert body["predicted"]["energy_j_per_frame"]["value"] == pytest.approx(e["value"] / 30)

    r = httpx.post(f"{api}/v1/advise", content=json.dumps(
        {"min_vmaf": 80, "resolution": "1920x1080", "objective": "carbon",
         "cpu_model": "Test CPU A", "logical_cpus": 8}))
    assert r.status_code == 200 and r.json()["ranked"][0]["objective_value"] > 0
    assert httpx.get(f"{api}/v1/dataset").json()["complete"] == len(synth(3))
    assert {m["target"] for m in httpx.get(f"{api}/v1/models").json()} >= {"vmaf"}
    bad = httpx.get(f"{api}/v1/advise?resolution=big")
    assert bad.status_code == 400 and "WIDTHxHEIGHT" in bad.json()["error"]
    assert httpx.get(f"{api}/v1/predict?resolution=1280x720").status_code == 400
    assert httpx.get(f"{api}/nope").status_code == 404


def test_pareto_members_are_among_all_options() -> None:
    recs = synth(2)
    a = advise(recs, None, 0, 1920, 1080, top=1000)
    keys = {json.dumps(o.settings, sort_keys=True) for o in a.ranked}
    assert all(json.dumps(o.settings, sort_keys=True) in keys for o in a.pareto)
    assert len(list(itertools.chain(a.pareto))) >= 1
