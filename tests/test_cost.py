"""Cost and carbon formulas against hand-computed cases; time-of-day prices; price book
errors; efficiency figures; metrics with bounded labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import shared.efficiency as eff
from schemas.cost_results import CostResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from services.cost_worker import logic
from services.cost_worker.app import cost_for
from services.cost_worker.config import PriceBook, PriceBookError, load_price_book
from services.cost_worker.grid import grid_table
from services.cost_worker.logic import (
    compute_cost,
    energy_price_at,
    mean_tariff_price,
    quality_weighted_pixels_per_joule,
    vmaf_per_kj,
)
from services.cost_worker.metrics import BoundedLabel, CostMetrics, resolution_class

REPO = Path(__file__).resolve().parents[1]


def ns(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1e9)


def energy(**kw: Any) -> ScenarioEnergy:
    settings = kw.pop("settings", None) or EncodeSettings(
        codec="libx264", preset="veryfast", width=1280, height=720, duration_s=10)
    start = kw.pop("start_ns", ns("2026-01-15T12:00:00+00:00"))
    base: dict[str, Any] = dict(
        scenario_id="s", host="h", settings=settings, start_ns=start, end_ns=start + 10**10,
        wall_s=10, energy_j=7200.0, zones_j={"cpu": 7200.0}, basis="estimated",
        sources=["estimate"], scope="component", mean_power_w=720, cpu_s=36, frames=250,
        coverage=1.0, max_gap_s=0.1, complete=True, n_samples=100, emitted_by="watermark")
    base.update(kw)
    return ScenarioEnergy(**base)


# --------------------------------------------------------------------------- formulas

def test_energy_and_compute_cost_by_hand() -> None:
    # 3.6 MJ = 1 kWh; × wall 2 × PUE 1.5 = 3 kWh; at 0.20/kWh = 0.60; 400 g/kWh → 1200 g
    # 1800 CPU-s = 0.5 vCPU-h at 0.04 = 0.02
    c = compute_cost(3.6e6, 1800, 0.20, 0.04, 400, pue=1.5, wall_factor=2.0,
                     pixels=2e6, content_s=1800)
    assert c.billed_energy_kwh == pytest.approx(3.0)
    assert c.energy_cost == pytest.approx(0.60)
    assert c.compute_cost == pytest.approx(0.02)
    assert c.total_cost == pytest.approx(0.62)
    assert c.carbon_g == pytest.approx(1200.0)
    assert c.cost_per_megapixel == pytest.approx(0.31)
    assert c.cost_per_content_hour == pytest.approx(1.24)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        compute_cost(-1, 0, 0.1, 0.1, 1)
    with pytest.raises(ValueError):
        compute_cost(1, 0, 0.1, 0.1, 1, pue=0.9)


BERLIN_BOOK = {
    "name": "hand-2026", "currency": "EUR", "compute_price_per_vcpu_hour": 0.04,
    "energy_price_per_kwh": 0.99, "egress_price_per_gb": 0.05, "audience_views": 100,
    "regions": {"de": {
        "timezone": "Europe/Berlin", "pue": 1.5, "wall_factor": 2.0, "carbon_g_per_kwh": 400,
        "energy_tariff": [{"start": "06:00", "end": "22:00", "price_per_kwh": 0.25},
                          {"start": "22:00", "end": "06:00", "price_per_kwh": 0.15}]}},
    "hosts": {"enc1": "de"},
}


def test_scenario_cost_with_tariff_and_viewer_hours_by_hand() -> None:
    book = PriceBook.model_validate(BERLIN_BOOK)
    # 2 streams × 900 s of content at 2000 kbit/s each → 2000e3/8 × 900 × 2 = 450e6 bytes
    s = EncodeSettings(codec="libx264", preset="medium", width=1000, height=1000,
                       duration_s=900, streams=2)
    e = energy(host="enc1", settings=s, energy_j=3.6e6, cpu_s=1800, frames=250,
               output_bytes=450_000_000, start_ns=ns("2026-01-15T04:30:00+00:00"))
    c = cost_for(e, book)
    # 04:30 UTC = 05:30 CET → night band 0.15; 1 kWh × wall 2 × PUE 1.5 = 3 kWh
    assert (c.region, c.price_band, c.price_per_kwh) == ("de", "22:00-06:00", 0.15)
    assert c.billed_energy_kwh == pytest.approx(3.0)
    assert c.energy_cost == pytest.approx(0.45)
    assert c.compute_basis == "vcpu_hour" and c.compute_hours == pytest.approx(0.5)
    assert c.compute_cost == pytest.approx(0.02)  # 0.5 vCPU-h × 0.04
    assert c.gpu_cost is None and c.gpu_hours is None  # libx264 runs on the CPU
    assert c.total_cost == pytest.approx(0.47)
    assert c.carbon_g == pytest.approx(1200.0)
    assert c.megapixels == pytest.approx(250.0)  # 1000 × 1000 × 250 frames
    assert c.cost_per_megapixel == pytest.approx(0.47 / 250)
    assert c.content_hours == pytest.approx(0.5)  # 900 s × 2 streams
    assert c.cost_per_content_hour == pytest.approx(0.94)
    assert c.pixels_per_joule == pytest.approx(2.5e8 / 3.6e6)
    # delivery: one stream for one hour = 2000 kbit/s × 3600 s / 8 = 0.9 GB × 0.05 = 0.045
    assert c.output_bitrate_kbps == pytest.approx(2000.0)
    assert c.delivery_gb_per_viewer_hour == pytest.approx(0.9)
    assert c.delivery_cost_per_viewer_hour == pytest.approx(0.045)
    # the encode's 0.94 per content hour spread over 100 full views
    assert c.encode_cost_per_viewer_hour == pytest.approx(0.0094)
    assert c.cost_per_viewer_hour == pytest.approx(0.0544)
    assert c.energy_basis == "estimated" and c.energy_sources == ["estimate"]
    assert c.currency == "EUR" and c.price_book == "hand-2026"
    CostResult.from_bytes(c.to_bytes())  # round-trips through the topic schema


def test_viewer_hour_needs_audience_and_egress_price() -> None:
    e = energy(output_bytes=1_000_000)
    c = cost_for(e, PriceBook())  # USD defaults: egress 0.12/GB, no audience
    assert c.delivery_gb_per_viewer_hour == pytest.approx(1e6 / 10 * 3600 / 1e9)
    assert c.delivery_cost_per_viewer_hour == pytest.approx(0.36 * 0.12)
    assert c.encode_cost_per_viewer_hour is None and c.cost_per_viewer_hour is None
    c2 = cost_for(energy(), PriceBook(audience_views=10))  # no output size → no delivery
    assert c2.delivery_cost_per_viewer_hour is None and c2.cost_per_viewer_hour is None
    assert c2.encode_cost_per_viewer_hour == pytest.approx(c2.cost_per_content_hour / 10)


def test_time_of_day_follows_local_time_and_daylight_saving() -> None:
    p = PriceBook.model_validate(BERLIN_BOOK).prices_for("enc1")
    # 04:30 UTC is 05:30 in winter (CET) but 06:30 in summer (CEST)
    assert energy_price_at(p, ns("2026-01-15T04:30:00+00:00")) == (0.15, "22:00-06:00")
    assert energy_price_at(p, ns("2026-07-01T04:30:00+00:00")) == (0.25, "06:00-22:00")
    assert energy_price_at(p, ns("2026-01-15T20:59:59+00:00"))[0] == 0.25  # 21:59 CET
    assert energy_price_at(p, ns("2026-01-15T21:00:00+00:00"))[0] == 0.15  # 22:00 CET
    # 16 h at 0.25 and 8 h at 0.15 → a day's time-weighted mean 0.21667
    assert mean_tariff_price(p) == pytest.approx((16 * 0.25 + 8 * 0.15) / 24)
    assert mean_tariff_price(p, 22 * 60, 6 * 60) == pytest.approx(0.15)
    assert mean_tariff_price(p, 20 * 60, 24 * 60) == pytest.approx(0.20)
    summer = energy(host="enc1", energy_j=3.6e6, start_ns=ns("2026-07-01T04:30:00+00:00"))
    assert cost_for(summer, PriceBook.model_validate(BERLIN_BOOK)).energy_cost == \
        pytest.approx(3.0 * 0.25)


def test_instance_hours_and_gpu_hours() -> None:
    book = PriceBook(compute_price_per_instance_hour=0.72, gpu_price_per_hour=1.8,
                     energy_price_per_kwh=0.0)
    s = EncodeSettings(codec="h264_nvenc", width=1920, height=1080, duration_s=60)
    c = cost_for(energy(settings=s, wall_s=50, cpu_s=5), book)
    # instance billed for wall time: 50 s / 3600 × 0.72 = 0.01; GPU 50 s × 1.8/h = 0.025
    assert c.compute_basis == "instance_hour"
    assert c.compute_cost == pytest.approx(0.01)
    assert c.gpu_hours == pytest.approx(50 / 3600) and c.gpu_cost == pytest.approx(0.025)
    assert c.total_cost == pytest.approx(0.035)


def test_wall_factor_is_not_applied_to_wall_energy() -> None:
    book = PriceBook(wall_factor=2.0, pue=1.0)
    comp = cost_for(energy(scope="component", energy_j=3.6e6), book)
    wall = cost_for(energy(scope="wall", energy_j=3.6e6), book)
    assert (comp.billed_energy_kwh, wall.billed_energy_kwh) == (pytest.approx(2.0),
                                                                pytest.approx(1.0))
    assert (comp.wall_factor, wall.wall_factor) == (2.0, 1.0)


def test_default_carbon_is_world_average_with_source() -> None:
    c = cost_for(energy(energy_j=3.6e6), PriceBook())
    assert c.carbon_intensity_g_per_kwh == 475.0 and c.carbon_g == pytest.approx(475.0)
    assert "IEA" in (c.carbon_intensity_source or "") and "2019" in c.carbon_intensity_source
    assert c.region == "default"
    table = grid_table()
    assert table["DEU"].g_co2e_per_kwh == 381.0 and table["DEU"].year == 2023
    assert table["FRA"].g_co2e_per_kwh == 56.0
    de = PriceBook(grid="DEU").prices_for("any")
    assert de.carbon_g_per_kwh == 381.0 and "Our World in Data" in de.carbon_source


# --------------------------------------------------------------------------- price book

def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "book.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(("text", "expected"), [
    ("currency: euro\npue: 0.5\n", ["currency", "ISO 4217", "pue"]),
    ("currency: XYZ\n", ["'XYZ' is not an ISO 4217"]),
    ("energy_price_per_kwh: 0.3\nunknown_field: 1\n", ["unknown_field: unknown key"]),
    ("regions:\n  a:\n    energy_price: 1\n", ["regions.a.energy_price: unknown key"]),
    ("hosts:\n  enc1: nowhere\n", ["enc1 → nowhere", "unknown regions"]),
    ("default_region: nowhere\n", ["default_region 'nowhere' is not in regions"]),
    ("grid: ATLANTIS\n", ["unknown grid 'ATLANTIS'", "DEU"]),
    ("timezone: Mars/Olympus\n", ["unknown timezone 'Mars/Olympus'"]),
    ("energy_tariff:\n  - {start: '00:00', end: '12:00', price_per_kwh: 1}\n"
     "  - {start: '11:00', end: '24:00', price_per_kwh: 2}\n",
     ["overlap", "11:00-12:00"]),
    ("energy_tariff:\n  - {start: '00:00', end: '07:00', price_per_kwh: 1}\n"
     "  - {start: '08:00', end: '22:00', price_per_kwh: 2}\n",
     ["07:00-08:00 is not covered", "22:00-24:00 is not covered"]),
    ("energy_tariff:\n  - {start: '7am', end: '22:00', price_per_kwh: 1}\n",
     ["'7am' is not a time of day"]),
    ("energy_price_per_kwh: 0.2\nenergy_tariff:\n"
     "  - {start: '00:00', end: '00:00', price_per_kwh: 1}\n", ["not both"]),
    ("compute_price_per_vcpu_hour: 1\ncompute_price_per_instance_hour: 2\n", ["not both"]),
    ("currency: EUR\nenergy_price_per_kwh: 0.3\n",
     ["set compute_price_per_vcpu_hour", "built-in prices are USD"]),
    ("- a\n- b\n", ["must be a mapping"]),
    ("regions:\n  default: {pue: 1.1}\n", ["reserved"]),
])
def test_price_book_errors_are_clear(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(PriceBookError) as e:
        load_price_book(write(tmp_path, text))
    for fragment in expected:
        assert fragment in str(e.value)


def test_price_book_loads_and_resolves(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="cannot read"):
        load_price_book(str(tmp_path / "missing.yaml"))
    b = load_price_book(write(tmp_path, "energy_price_per_kwh: 0.3\ncurrency: EUR\n"
                                        "compute_price_per_vcpu_hour: 0.02\n"))
    p = b.prices_for("anything")
    assert (p.energy_price_per_kwh, p.compute_price_per_hour, p.currency) == (0.3, 0.02, "EUR")
    assert p.gpu_price_per_hour is None and p.egress_price_per_gb is None  # no USD defaults
    usd = PriceBook().prices_for("h")
    assert (usd.energy_price_per_kwh, usd.compute_price_per_hour, usd.gpu_price_per_hour,
            usd.egress_price_per_gb) == (0.13, 0.031611, 0.95, 0.12)
    # a whole-day single band (start == end) is a valid tariff
    one = PriceBook.model_validate({"energy_tariff": [
        {"start": "00:00", "end": "00:00", "price_per_kwh": 0.3}]}).prices_for("h")
    assert energy_price_at(one, ns("2026-03-01T13:00:00+00:00")) == (0.3, "00:00-00:00")


def test_example_price_book_is_valid() -> None:
    b = load_price_book(str(REPO / "config" / "pricebook.example.yaml"))
    assert b.currency == "EUR"
    assert b.prices_for("encoder-2").carbon_g_per_kwh == 56.0  # FRA
    assert b.prices_for("cloud-encoder-7").compute_basis == "instance_hour"
    assert b.region_of("unlisted") == "eu-de"


# --------------------------------------------------------------------------- efficiency

def test_efficiency_figures_are_defined_once() -> None:
    assert eff.vmaf_per_kj(90, 2000) == pytest.approx(45.0)
    assert eff.vmaf_per_kj(90, 0) is None and eff.vmaf_per_kj(None, 10) is None
    assert eff.pixels_per_joule(1e6, 4) == pytest.approx(2.5e5)
    assert eff.quality_weighted_pixels_per_joule(1e6, 50, 10) == pytest.approx(5e4)
    assert eff.pixels_encoded(1280, 720, 25) == 1280 * 720 * 25
    assert eff.pixels_encoded(0, 720, 25) is None
    # the cost worker's names are the shared functions, not copies
    assert logic.vmaf_per_kj is eff.vmaf_per_kj and vmaf_per_kj is eff.vmaf_per_kj
    assert quality_weighted_pixels_per_joule is eff.quality_weighted_pixels_per_joule
    from services import report
    assert report.vmaf_per_kj(50, 500) == pytest.approx(100.0)


# --------------------------------------------------------------------------- metrics

def test_resolution_classes_and_bounded_labels() -> None:
    assert [resolution_class(w, h) for w, h in
            [(320, 180), (640, 360), (1280, 720), (1920, 1080), (1080, 1920), (3840, 2160),
             (0, 0), (8000, 8000)]] == \
        ["240p", "360p", "720p", "1080p", "1080p", "2160p", "unknown", "above-4320p"]
    lab = BoundedLabel(limit=3)
    assert [lab(x) for x in ["a", "b", "a", "c", "d", None]] == ["a", "b", "a", "c", "other",
                                                                  "other"]


def test_metrics_have_bounded_labels_and_values() -> None:
    reg = CollectorRegistry()
    m = CostMetrics(reg)
    book = PriceBook()
    for i in range(40):  # 40 distinct codecs must not make 40 series
        e = energy(scenario_id=f"s{i}", energy_j=3.6e6, settings=EncodeSettings(
            codec=f"codec{i}", preset="fast", width=1280, height=720, duration_s=10))
        m.observe_cost(m.labels_of(e.settings, e.basis), cost_for(e, book))
    codecs = {s.labels["codec"] for metric in reg.collect() for s in metric.samples
              if s.name == "joulestream_cost_worker_carbon_grams_total"}
    assert len(codecs) == 17 and "other" in codecs
    other = reg.get_sample_value("joulestream_cost_worker_carbon_grams_total", {
        "codec": "other", "preset": "fast", "resolution": "720p", "basis": "estimated"})
    assert other == pytest.approx(24 * 475.0)  # 24 scenarios of 1 kWh at 475 g/kWh
    assert reg.get_sample_value("joulestream_cost_worker_scenario_cost_count", {
        "codec": "codec0", "preset": "fast", "resolution": "720p", "basis": "estimated",
        "currency": "USD"}) == 1
    for metric in reg.collect():
        for s in metric.samples:
            assert "scenario_id" not in s.labels


def test_wall_energy_from_a_plug_is_billed_instead_of_component_energy() -> None:
    from schemas.scenario_energy import ScenarioEnergy
    from schemas.scenario_events import EncodeSettings
    from services.cost_worker.app import cost_for
    from services.cost_worker.config import PriceBook

    base = dict(
        scenario_id="s", host="h", settings=EncodeSettings(codec="libx264", duration_s=10),
        start_ns=1_790_000_000 * 10**9, end_ns=1_790_000_010 * 10**9, wall_s=10,
        energy_j=3600.0, zones_j={"package-0": 3600.0}, basis="measured", sources=["rapl"],
        scope="component", mean_power_w=360, coverage=1.0, max_gap_s=0.1, complete=True,
        n_samples=100, emitted_by="watermark")
    book = PriceBook(wall_factor=2.0, energy_price_per_kwh=1.0)
    component = cost_for(ScenarioEnergy(**base), book)  # type: ignore[arg-type]
    assert component.energy_scope == "component" and component.wall_factor == 2.0
    assert component.billed_energy_kwh == pytest.approx(0.002)
    plug = cost_for(ScenarioEnergy(**base, wall_energy_j=5400.0, wall_coverage=1.0), book)  # type: ignore[arg-type]
    assert plug.energy_scope == "wall" and plug.energy_sources == ["mqtt_plug"]
    assert plug.wall_factor == 1.0 and plug.billed_energy_kwh == pytest.approx(0.0015)
    partial = cost_for(ScenarioEnergy(**base, wall_energy_j=100.0, wall_coverage=0.5), book)  # type: ignore[arg-type]
    assert partial.energy_scope == "component"  # a partly covered plug window is not billed
