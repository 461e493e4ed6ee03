"""TCO projection against a hand computation; ladder errors; report.json input; the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from services.cli import build_parser
from services.cost_worker.cli import LadderError, load_ladder, measurements_from_report
from services.cost_worker.config import PriceBook
from services.cost_worker.tco import (
    Ladder,
    Measurement,
    NoData,
    Prediction,
    measurement_from_energy,
    project,
)
from services.report import report_rows

REPO = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000 * 10**9


def m(sid: str, energy_j: float, duration_s: float, cpu_s: float, wall_s: float,
      basis: str = "measured", streams: int = 1, kbps: float = 400) -> Measurement:
    s = EncodeSettings(codec="libx264", preset="veryfast", width=640, height=360,
                       bitrate_kbps=kbps, duration_s=duration_s, streams=streams, fps=25)
    return Measurement(sid, s, energy_j, cpu_s, wall_s, basis,  # type: ignore[arg-type]
                       ("rapl",) if basis == "measured" else ("estimate",), "component")


LADDER = {
    "name": "hand", "content_hours_per_day": 10, "days_per_month": 30,
    "rungs": [
        {"name": "low", "codec": "libx264", "preset": "veryfast", "bitrate_kbps": 400},
        {"name": "high", "codec": "libx264", "preset": "slow", "bitrate_kbps": 3000},
    ],
}
BOOK = PriceBook(energy_price_per_kwh=0.10, compute_price_per_vcpu_hour=0.05, pue=1.5,
                 grid="FRA")


def test_projection_by_hand() -> None:
    ms = [m("a", 100, 10, 5, 4), m("b", 300, 15, 15, 12, basis="estimated", streams=2),
          m("other", 9999, 10, 1, 1, kbps=1500)]  # a different bitrate: must not match
    calls: list[EncodeSettings] = []

    def predictor(s: EncodeSettings) -> Prediction | None:
        calls.append(s)
        return Prediction(energy_j_per_content_s=20.0, basis="model m1 (test)")

    p = project(Ladder.model_validate(LADDER), BOOK, ms, predictor)
    # a month = 10 h/day × 30 days = 300 h = 1.08e6 content seconds
    low, high = p.rungs
    # low: (100 + 300) J over (10 + 15×2) content s = 10 J/s; CPU (5 + 15)/40 = 0.5 s/s
    assert low.energy_j_per_content_s == pytest.approx(10.0)
    assert low.scenario_ids == ("a", "b")
    assert low.basis == "estimated"  # one of its scenarios was estimated
    assert low.monthly_content_hours == pytest.approx(300.0)
    assert low.monthly_energy_kwh == pytest.approx(3.0)  # 10 × 1.08e6 / 3.6e6
    assert low.monthly_billed_kwh == pytest.approx(4.5)  # × PUE 1.5
    assert low.monthly_energy_cost == pytest.approx(0.45)
    assert low.monthly_compute_hours == pytest.approx(150.0)  # 0.5 × 1.08e6 / 3600
    assert low.monthly_compute_cost == pytest.approx(7.5)
    assert low.monthly_total_cost == pytest.approx(7.95)
    assert low.monthly_carbon_kg == pytest.approx(4.5 * 56 / 1000)  # FRA 56 g/kWh
    # high: nothing measured → the predictor; no CPU rate predicted → no compute, no total
    assert [c.preset for c in calls] == ["slow"] and calls[0].bitrate_kbps == 3000
    assert high.basis == "predicted" and high.source == "model m1 (test)"
    assert high.monthly_energy_kwh == pytest.approx(6.0)
    assert high.monthly_energy_cost == pytest.approx(0.9)
    assert high.monthly_compute_cost is None and high.monthly_total_cost is None
    assert p.basis == "mixed (estimated, predicted)"
    assert p.monthly_energy_kwh == pytest.approx(9.0)
    assert p.monthly_billed_kwh == pytest.approx(13.5)
    assert p.monthly_energy_cost == pytest.approx(1.35)
    assert p.monthly_total_cost is None  # never a total that leaves a part out silently
    assert p.monthly_carbon_kg == pytest.approx(13.5 * 56 / 1000)
    assert p.currency == "USD" and p.price_per_kwh == 0.10


def test_missing_rungs_are_named() -> None:
    with pytest.raises(NoData, match=r"high.*--predictor"):
        project(Ladder.model_validate(LADDER), BOOK, [m("a", 100, 10, 5, 4)])
    with pytest.raises(NoData, match="could not predict"):
        project(Ladder.model_validate(LADDER), BOOK, [m("a", 100, 10, 5, 4)], lambda s: None)


def test_encode_window_uses_the_tariff_mean_and_instance_hours() -> None:
    book = PriceBook.model_validate({
        "compute_price_per_instance_hour": 2.0, "pue": 1.0,
        "regions": {"night": {"energy_tariff": [
            {"start": "06:00", "end": "22:00", "price_per_kwh": 0.30},
            {"start": "22:00", "end": "06:00", "price_per_kwh": 0.10}]}}})
    ladder = Ladder.model_validate({
        "content_hours_per_day": 1, "days_per_month": 30, "region": "night",
        "encode_window": {"start": "23:00", "end": "05:00"},
        "rungs": [{"codec": "libx264", "bitrate_kbps": 400}]})
    # 36 J per 10 s of content = 3.6 J/s; 30 h/month = 108 000 s → 388 800 J = 0.108 kWh
    p = project(ladder, book, [m("a", 36, 10, 5, 2)])
    r = p.rungs[0]
    assert p.price_per_kwh == pytest.approx(0.10)  # the window lies in the night band
    assert r.monthly_energy_cost == pytest.approx(0.108 * 0.10)
    # instance billed for wall time: 0.2 s per content s × 108 000 s = 6 h × 2.0
    assert r.compute_basis == "instance_hour" and r.monthly_compute_hours == pytest.approx(6.0)
    assert r.monthly_total_cost == pytest.approx(12.0 + 0.0108)
    assert r.rung == "libx264/400kbps" and r.basis == "measured"


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"content_hours_per_day": 1, "rungs": []}, "rungs"),
    ({"rungs": [{"codec": "x"}]}, "content_hours_per_day"),
    ({"content_hours_per_day": 1, "rungs": [{"codec": "x", "speed": 3}]}, "unknown key"),
    ({"content_hours_per_day": 1, "host": "a", "region": "b", "rungs": [{"codec": "x"}]},
     "not both"),
    ({"content_hours_per_day": 1, "rungs": [{"codec": "x"}, {"codec": "x"}]}, "duplicate"),
    ({"content_hours_per_day": 1, "encode_window": {"start": "25:00", "end": "01:00"},
      "rungs": [{"codec": "x"}]}, "not a time of day"),
])
def test_ladder_errors(tmp_path: Path, doc: dict[str, Any], fragment: str) -> None:
    p = tmp_path / "ladder.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(LadderError, match=fragment):
        load_ladder(str(p))


def energy_record(sid: str, preset: str, kbps: float, energy_j: float,
                  basis: str = "estimated", width: int = 640, height: int = 360
                  ) -> ScenarioEnergy:
    return ScenarioEnergy(
        scenario_id=sid, host="h", settings=EncodeSettings(
            codec="libx264", preset=preset, width=width, height=height, bitrate_kbps=kbps,
            duration_s=2, fps=25),
        start_ns=T0, end_ns=T0 + 2 * 10**9, wall_s=2, energy_j=energy_j,
        zones_j={"cpu": energy_j}, basis=basis, sources=["estimate"], scope="component",
        mean_power_w=energy_j / 2, cpu_s=1.5, frames=50, coverage=1.0, max_gap_s=0.1,
        complete=True, n_samples=20, emitted_by="watermark")


def test_cli_from_report_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a report.json in the format the demo writes (rows from services.report)
    recs = [energy_record("r1", "veryfast", 400, 30.0),
            energy_record("r2", "veryfast", 1500, 50.0, width=1280, height=720)]
    rows = report_rows({e.scenario_id: e for e in recs}, {}, {}, ["r1", "r2"])
    (tmp_path / "report.json").write_text(json.dumps({"scenarios": rows}))
    assert [x.scenario_id for x in measurements_from_report(str(tmp_path / "report.json"))] == \
        ["r1", "r2"]
    assert measurement_from_energy(recs[0]) is not None
    args = build_parser().parse_args(
        ["tco", str(REPO / "config" / "ladder.example.yaml"), "--report",
         str(tmp_path / "report.json"), "--price-book",
         str(REPO / "config" / "pricebook.example.yaml"), "--json"])
    assert args.fn(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["currency"] == "EUR" and out["region"] == "eu-de" and out["basis"] == "estimated"
    # 30 J per 2 s = 15 J/s × 24 h × 3600 × 30.4375 days = 39 447 000 J = 10.9575 kWh
    assert out["rungs"][0]["monthly_energy_kwh"] == pytest.approx(15 * 24 * 3600 * 30.4375 / 3.6e6)
    assert out["price_per_kwh"] == pytest.approx(0.15)  # the night window of the example
    args = build_parser().parse_args(["tco", str(REPO / "config" / "ladder.example.yaml"),
                                      "--report", str(tmp_path / "report.json")])
    assert args.fn(args) == 0
    text = capsys.readouterr().out
    assert "TOTAL" in text and "estimated" in text and "USD" in text
    # a rung nothing measured: a clear error and exit status 2
    (tmp_path / "report.json").write_text(json.dumps({"scenarios": rows[:1]}))
    assert args.fn(args) == 2
    assert "720p-1500k" in capsys.readouterr().err
