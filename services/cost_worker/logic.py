"""Cost and carbon formulas — pure functions over plain values, units in the names.

Conventions (docs/cost.md has the full list and the sources of the defaults):

* billed kWh   = energy J / 3.6e6 × wall factor (component → wall) × PUE (facility overhead)
* energy cost  = billed kWh × price per kWh (flat, or the time-of-day band of the start)
* compute cost = CPU-seconds / 3600 × price per vCPU-hour, or wall seconds / 3600 × price
  per instance-hour; GPU cost = wall seconds / 3600 × GPU-hour price for GPU encoders
* carbon g     = billed kWh × grid intensity (gCO2e/kWh)
* delivery GB per viewer-hour = output bytes per stream ÷ content seconds × 3600 ÷ 1e9

Money is in the price book's one currency; no function here converts currencies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

# The efficiency figures live in shared.efficiency (defined once); re-exported here because
# callers (services/report.py) import them from this module.
from shared.efficiency import (
    pixels_encoded,
    pixels_per_joule,
    quality_weighted_pixels_per_joule,
    vmaf_per_kj,
)

__all__ = [
    "BYTES_PER_GB",
    "J_PER_KWH",
    "MINUTES_PER_DAY",
    "CostBreakdown",
    "ResolvedPrices",
    "ScenarioCost",
    "ScenarioInputs",
    "TariffSegment",
    "compute_cost",
    "delivery_gb_per_viewer_hour",
    "energy_price_at",
    "is_gpu_encoder",
    "mean_tariff_price",
    "output_bitrate_kbps",
    "pixels_encoded",
    "pixels_per_joule",
    "quality_weighted_pixels_per_joule",
    "scenario_cost",
    "vmaf_per_kj",
]

J_PER_KWH = 3.6e6
#: delivery is billed in decimal gigabytes (1 GB = 1e9 bytes)
BYTES_PER_GB = 1e9
MINUTES_PER_DAY = 24 * 60

ComputeBasis = Literal["vcpu_hour", "instance_hour"]

#: ffmpeg encoder name suffixes that run on a GPU / fixed-function media engine
_GPU_ENCODER_SUFFIXES = ("_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox", "_v4l2m2m",
                         "_mf", "_vulkan", "_cuda")


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
    """Money and carbon of one encode priced per vCPU-hour.

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


# --------------------------------------------------------------------------- prices

@dataclass(frozen=True)
class TariffSegment:
    """One non-wrapping piece of a time-of-day tariff: [start_min, end_min) local minutes."""

    start_min: int
    end_min: int
    price_per_kwh: float
    label: str  # the band as written in the price book, e.g. "22:00-06:00"


@dataclass(frozen=True)
class ResolvedPrices:
    """Every price and factor that applies to one region, defaults filled in.

    ``tariff`` is empty for a flat ``energy_price_per_kwh``; otherwise its segments cover
    the local day [0, 1440) minutes exactly once (the price book validates that).
    ``gpu_price_per_hour`` / ``egress_price_per_gb`` are None when the book does not price
    them (then those costs are not computed, never guessed).
    """

    region: str
    currency: str
    energy_price_per_kwh: float | None
    tariff: tuple[TariffSegment, ...]
    timezone: str
    compute_basis: ComputeBasis
    compute_price_per_hour: float
    gpu_price_per_hour: float | None
    egress_price_per_gb: float | None
    pue: float
    wall_factor: float
    carbon_g_per_kwh: float
    carbon_source: str


def _local_minute(ts_ns: int, timezone: str) -> int:
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).astimezone(ZoneInfo(timezone))
    return t.hour * 60 + t.minute


def energy_price_at(prices: ResolvedPrices, ts_ns: int) -> tuple[float, str]:
    """Price per kWh at UTC time ``ts_ns`` and the band it came from ("flat" or "HH:MM-HH:MM").

    The band is chosen by the local time (the region's timezone) of ``ts_ns``.
    """
    if not prices.tariff:
        assert prices.energy_price_per_kwh is not None
        return prices.energy_price_per_kwh, "flat"
    m = _local_minute(ts_ns, prices.timezone)
    for seg in prices.tariff:
        if seg.start_min <= m < seg.end_min:
            return seg.price_per_kwh, seg.label
    raise ValueError(f"tariff of region {prices.region} does not cover minute {m}")


def mean_tariff_price(prices: ResolvedPrices, start_min: int = 0,
                      end_min: int = MINUTES_PER_DAY) -> float:
    """Time-weighted mean price per kWh over local minutes [start_min, end_min) of a day
    (end ≤ start wraps past midnight; start == end means the whole day).  For projections
    of work spread evenly over that window."""
    if not prices.tariff:
        assert prices.energy_price_per_kwh is not None
        return prices.energy_price_per_kwh
    if not (0 <= start_min < MINUTES_PER_DAY and 0 <= end_min <= MINUTES_PER_DAY):
        raise ValueError("window minutes must lie within one day")
    if end_min <= start_min:
        windows = [(start_min, MINUTES_PER_DAY), (0, end_min)] if end_min != start_min \
            else [(0, MINUTES_PER_DAY)]
    else:
        windows = [(start_min, end_min)]
    total_min = 0
    weighted = 0.0
    for a, b in windows:
        for seg in prices.tariff:
            overlap = min(b, seg.end_min) - max(a, seg.start_min)
            if overlap > 0:
                total_min += overlap
                weighted += overlap * seg.price_per_kwh
    if total_min == 0:
        raise ValueError("empty window")
    return weighted / total_min


# --------------------------------------------------------------------------- per scenario

def is_gpu_encoder(codec: str) -> bool:
    """True for ffmpeg hardware encoders (h264_nvenc, hevc_qsv, av1_vaapi, ...)."""
    return codec.endswith(_GPU_ENCODER_SUFFIXES)


def output_bitrate_kbps(output_bytes: int | None, duration_s: float, streams: int
                        ) -> float | None:
    """Real bitrate of one output stream, kbit/s: bytes × 8 / 1000 / content s / streams."""
    if output_bytes is None or duration_s <= 0 or streams < 1:
        return None
    return output_bytes * 8 / 1000 / duration_s / streams


def delivery_gb_per_viewer_hour(output_bytes: int | None, duration_s: float, streams: int
                                ) -> float | None:
    """GB (1e9 bytes) one viewer receives per hour of watching one output stream."""
    if output_bytes is None or duration_s <= 0 or streams < 1:
        return None
    return output_bytes / streams / duration_s * 3600.0 / BYTES_PER_GB


@dataclass(frozen=True)
class ScenarioInputs:
    """What the cost of one encode depends on (plain values taken from scenario.energy)."""

    codec: str
    width: int
    height: int
    frames: int
    duration_s: float  # seconds of content per stream
    streams: int
    start_ns: int  # UTC ns, chooses the time-of-day band
    wall_s: float
    cpu_s: float
    energy_j: float
    scope: Literal["component", "wall"]
    output_bytes: int | None = None


@dataclass(frozen=True)
class ScenarioCost:
    price_per_kwh: float
    price_band: str
    wall_factor: float
    billed_energy_kwh: float
    energy_cost: float
    compute_basis: ComputeBasis
    compute_hours: float
    compute_cost: float
    gpu_hours: float | None
    gpu_cost: float | None
    total_cost: float
    carbon_g: float
    megapixels: float | None
    content_hours: float | None
    cost_per_megapixel: float | None
    cost_per_content_hour: float | None
    pixels_per_joule: float | None
    output_bitrate_kbps: float | None
    delivery_gb_per_viewer_hour: float | None
    delivery_cost_per_viewer_hour: float | None
    encode_cost_per_viewer_hour: float | None
    cost_per_viewer_hour: float | None


def scenario_cost(x: ScenarioInputs, prices: ResolvedPrices,
                  audience_views: float | None = None) -> ScenarioCost:
    """Money, carbon and per-unit costs of one encode.

    ``audience_views``: how many times each hour of content is watched in full; the encode
    cost per content hour is spread over them (encode cost per viewer-hour), and each
    viewer-hour adds the delivery of one output stream at its real bitrate.  Without an
    audience (or without an egress price, or output size) the viewer-hour cost is None.
    """
    if min(x.energy_j, x.cpu_s, x.wall_s) < 0:
        raise ValueError("energy, CPU time and wall time must be non-negative")
    price, band = energy_price_at(prices, x.start_ns)
    wall_factor = prices.wall_factor if x.scope == "component" else 1.0
    kwh = x.energy_j / J_PER_KWH * wall_factor * prices.pue
    energy_cost = kwh * price
    if prices.compute_basis == "vcpu_hour":
        compute_h = x.cpu_s / 3600.0
    else:
        compute_h = x.wall_s / 3600.0
    compute = compute_h * prices.compute_price_per_hour
    gpu_h = x.wall_s / 3600.0 if is_gpu_encoder(x.codec) else None
    gpu_cost = (gpu_h * prices.gpu_price_per_hour
                if gpu_h is not None and prices.gpu_price_per_hour is not None else None)
    total = energy_cost + compute + (gpu_cost or 0.0)
    pixels = pixels_encoded(x.width, x.height, x.frames)
    megapixels = pixels / 1e6 if pixels else None
    content_h = x.duration_s * x.streams / 3600.0 if x.duration_s > 0 else None
    per_content_h = total / content_h if content_h else None
    gb_vh = delivery_gb_per_viewer_hour(x.output_bytes, x.duration_s, x.streams)
    delivery_vh = (gb_vh * prices.egress_price_per_gb
                   if gb_vh is not None and prices.egress_price_per_gb is not None else None)
    encode_vh = (per_content_h / audience_views
                 if per_content_h is not None and audience_views else None)
    per_vh = encode_vh + delivery_vh if encode_vh is not None and delivery_vh is not None \
        else None
    return ScenarioCost(
        price_per_kwh=price, price_band=band, wall_factor=wall_factor, billed_energy_kwh=kwh,
        energy_cost=energy_cost, compute_basis=prices.compute_basis, compute_hours=compute_h,
        compute_cost=compute, gpu_hours=gpu_h, gpu_cost=gpu_cost, total_cost=total,
        carbon_g=kwh * prices.carbon_g_per_kwh, megapixels=megapixels, content_hours=content_h,
        cost_per_megapixel=total / megapixels if megapixels else None,
        cost_per_content_hour=per_content_h,
        pixels_per_joule=pixels_per_joule(pixels, x.energy_j),
        output_bitrate_kbps=output_bitrate_kbps(x.output_bytes, x.duration_s, x.streams),
        delivery_gb_per_viewer_hour=gb_vh, delivery_cost_per_viewer_hour=delivery_vh,
        encode_cost_per_viewer_hour=encode_vh, cost_per_viewer_hour=per_vh,
    )
