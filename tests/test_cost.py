"""Cost and carbon formulas against hand-computed cases; price book errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings
from services.cost_worker.app import cost_for
from services.cost_worker.config import PriceBook, PriceBookError, load_price_book
from services.cost_worker.logic import compute_cost, quality_weighted_pixels_per_joule, vmaf_per_kj


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


def test_efficiency_figures() -> None:
    assert vmaf_per_kj(90, 2000) == pytest.approx(45.0)
    assert vmaf_per_kj(90, 0) is None
    assert quality_weighted_pixels_per_joule(1e6, 50, 10) == pytest.approx(5e4)


def test_estimated_energy_keeps_its_label_through_cost() -> None:
    e = ScenarioEnergy(
        scenario_id="s", host="h", settings=EncodeSettings(codec="libx264", width=1280,
                                                           height=720, duration_s=10),
        start_ns=1_790_000_000 * 10**9, end_ns=1_790_000_010 * 10**9, wall_s=10,
        energy_j=7200.0, zones_j={"cpu": 7200.0}, basis="estimated", sources=["estimate"],
        scope="component", mean_power_w=720, cpu_s=36, frames=250, coverage=1.0,
        max_gap_s=0.1, complete=True, n_samples=100, emitted_by="watermark")
    book = PriceBook(energy_price_per_kwh=0.5, compute_price_per_vcpu_hour=1.0,
                     carbon_g_per_kwh=100, currency="EUR")
    c = cost_for(e, book)
    assert c.energy_basis == "estimated"
    assert c.currency == "EUR"
    assert c.energy_cost == pytest.approx(0.001)  # 2 Wh × 0.5 / 1000
    assert c.compute_cost == pytest.approx(0.01)  # 36 s = 0.01 h
    assert c.carbon_g == pytest.approx(0.2)


def test_price_book_errors_are_clear(tmp_path: Path) -> None:
    p = tmp_path / "book.yaml"
    p.write_text("currency: euro\npue: 0.5\n")
    with pytest.raises(PriceBookError) as e:
        load_price_book(str(p))
    assert "currency" in str(e.value) and "pue" in str(e.value)
    p.write_text("energy_price_per_kwh: 0.3\nunknown_field: 1\n")
    with pytest.raises(PriceBookError, match="unknown_field"):
        load_price_book(str(p))
    p.write_text("energy_price_per_kwh: 0.3\ncurrency: EUR\n")
    assert load_price_book(str(p)).energy_price_per_kwh == 0.3
    with pytest.raises(PriceBookError, match="cannot read"):
        load_price_book(str(tmp_path / "missing.yaml"))
