"""Cost and carbon formulas — pure functions over plain values, units in the names."""

from __future__ import annotations

from dataclasses import dataclass

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class CostBreakdown:
    billed_energy_kwh: float
    energy_cost: float
    compute_cost: float
    total_cost: float
    carbon_g: float
    cost_per_megapixel: float | None
    cost_per_content_hour: float | None


def compute_cost(
    energy_j: float,
    cpu_s: float,
    price_per_kwh: float,
    price_per_vcpu_hour: float,
    carbon_g_per_kwh: float,
    pue: float = 1.0,
    wall_factor: float = 1.0,
    pixels: float | None = None,
    content_s: float | None = None,
) -> CostBreakdown:
    """Money and carbon of one encode.

    billed kWh = joules / 3.6e6 × wall_factor (component → wall) × PUE (facility overhead);
    energy cost = billed kWh × price; compute cost = CPU-seconds / 3600 × price per vCPU-hour;
    carbon = billed kWh × grid intensity (gCO2e/kWh).
    """
    if min(energy_j, cpu_s, price_per_kwh, price_per_vcpu_hour, carbon_g_per_kwh) < 0:
        raise ValueError("energy, CPU time, prices and intensity must be non-negative")
    if pue < 1.0 or wall_factor < 1.0:
        raise ValueError("PUE and wall factor are >= 1")
    kwh = energy_j / J_PER_KWH * wall_factor * pue
    e_cost = kwh * price_per_kwh
    c_cost = cpu_s / 3600.0 * price_per_vcpu_hour
    total = e_cost + c_cost
    per_mp = total / (pixels / 1e6) if pixels else None
    per_hour = total / (content_s / 3600.0) if content_s else None
    return CostBreakdown(kwh, e_cost, c_cost, total, kwh * carbon_g_per_kwh, per_mp, per_hour)


def vmaf_per_kj(vmaf: float, energy_j: float) -> float | None:
    """Quality per energy: VMAF points per kilojoule (None when energy is zero)."""
    return vmaf / (energy_j / 1000.0) if energy_j > 0 else None


def pixels_per_joule(pixels: float, energy_j: float) -> float | None:
    return pixels / energy_j if energy_j > 0 else None


def quality_weighted_pixels_per_joule(pixels: float, vmaf: float, energy_j: float) -> float | None:
    """pixels × VMAF/100 ÷ J: pixels delivered at full quality per joule."""
    return pixels * vmaf / 100.0 / energy_j if energy_j > 0 else None
