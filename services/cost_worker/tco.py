"""TCO projection: a workload (hours of content per day × a ladder of settings) → monthly
energy, cost and carbon — pure functions; I/O lives in cli.py.

Every rung encodes all the workload's content.  Its per-content-second rates (energy J,
CPU-seconds, wall seconds) come from measured scenarios with the same settings (ratio of
sums over all matching scenarios, so longer encodes weigh more) or, for rungs without a
measurement, from a predictor (the trainer's model).  Each rung says which, and the
projection's basis is "measured" only if every rung was measured.

Ladder file (YAML; example in config/ladder.example.yaml)::

    name: vod-ladder
    content_hours_per_day: 24      # hours of source content encoded per day
    days_per_month: 30.4375        # default: 365.25 / 12
    host: encoder-1                # price this host's region (or: region: eu-de)
    encode_window: {start: "22:00", end: "06:00"}   # optional; local time, default all day
    rungs:
      - {codec: libx264, preset: veryfast, width: 1280, height: 720, bitrate_kbps: 1500}
      - {name: 360p, codec: libx264, preset: veryfast, width: 640, height: 360, crf: 28}

A rung matches a scenario when the codec and every field the rung sets are equal
(unset fields match anything).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._base import Name
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings

from .config import PriceBook, TariffBand, _minutes
from .logic import J_PER_KWH, ResolvedPrices, is_gpu_encoder, mean_tariff_price

#: content seconds of the settings handed to a predictor (rates are per content second)
PREDICTION_DURATION_S = 60.0


class Rung(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name | None = None
    codec: Name
    preset: Name | None = None
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0)
    bitrate_kbps: float | None = Field(default=None, gt=0)
    crf: float | None = Field(default=None, ge=0, le=63)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.codec, self.preset or "",
                 f"{self.width}x{self.height}" if self.width and self.height else "",
                 f"{self.bitrate_kbps:g}kbps" if self.bitrate_kbps else "",
                 f"crf{self.crf:g}" if self.crf is not None else ""]
        return "/".join(p for p in parts if p)

    def settings(self) -> EncodeSettings:
        """Settings for a predictor: the rung's fields, 60 s of content, one stream."""
        return EncodeSettings(codec=self.codec, preset=self.preset, width=self.width or 0,
                              height=self.height or 0, fps=self.fps or 0.0,
                              bitrate_kbps=self.bitrate_kbps, crf=self.crf,
                              duration_s=PREDICTION_DURATION_S)


class EncodeWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str
    end: str

    @model_validator(mode="after")
    def _times(self) -> EncodeWindow:
        TariffBand(start=self.start, end=self.end, price_per_kwh=0)  # same HH:MM rules
        return self


class Ladder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = "ladder"
    content_hours_per_day: float = Field(gt=0, le=1_000_000)
    days_per_month: float = Field(default=365.25 / 12, gt=0, le=31)
    host: Name | None = None
    region: Name | None = None
    encode_window: EncodeWindow | None = None
    rungs: list[Rung] = Field(min_length=1)

    @model_validator(mode="after")
    def _where(self) -> Ladder:
        if self.host and self.region:
            raise ValueError("set host or region, not both")
        labels = [r.label for r in self.rungs]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate rungs: {', '.join(dup)} (give them distinct names)")
        return self


@dataclass(frozen=True)
class Measurement:
    """One measured scenario, reduced to what a projection needs."""

    scenario_id: str
    settings: EncodeSettings
    energy_j: float
    cpu_s: float
    wall_s: float
    basis: Literal["measured", "estimated"]
    sources: tuple[str, ...]
    scope: Literal["component", "wall"]

    @property
    def content_s(self) -> float:
        return self.settings.duration_s * self.settings.streams


def measurement_from_energy(e: ScenarioEnergy) -> Measurement | None:
    """None for idle windows, incomplete energy and scenarios without content duration."""
    if e.settings.is_idle or not e.complete or e.settings.duration_s <= 0:
        return None
    return Measurement(e.scenario_id, e.settings, e.energy_j, e.cpu_s, e.wall_s, e.basis,
                       tuple(e.sources), e.scope)


def measurement_from_report_row(row: dict[str, Any]) -> Measurement | None:
    """A row of ``report.json`` ("scenarios") as written by ``joulestream demo --out``."""
    if row.get("energy_complete") is False or not row.get("duration_s"):
        return None
    s = EncodeSettings(codec=row["codec"], preset=row.get("preset"),
                       bitrate_kbps=row.get("bitrate_kbps"), crf=row.get("crf"),
                       width=row.get("width") or 0, height=row.get("height") or 0,
                       fps=row.get("fps") or 0.0, duration_s=row["duration_s"],
                       streams=row.get("streams") or 1)
    if s.is_idle:
        return None
    return Measurement(row["scenario_id"], s, float(row["energy_j"]), float(row["cpu_s"]),
                       float(row["wall_s"]), row["energy_basis"],
                       tuple(row.get("energy_sources") or ()), row.get("energy_scope", "component"))


@dataclass(frozen=True)
class Prediction:
    """What a predictor returns for one rung: rates per content second and their basis.

    ``basis`` names the model, e.g. "model energy_j_per_content_s gbr abc123 (CV MAPE 9%)".
    CPU/wall rates are optional; without the one the compute price needs, compute cost is
    not projected (and the total is absent).
    """

    energy_j_per_content_s: float
    basis: str
    scope: Literal["component", "wall"] = "component"
    cpu_s_per_content_s: float | None = None
    wall_s_per_content_s: float | None = None


#: the hook for the trainer: settings → predicted rates, or None when it cannot predict
Predictor = Callable[[EncodeSettings], Prediction | None]


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def matches(rung: Rung, s: EncodeSettings) -> bool:
    if rung.codec != s.codec:
        return False
    if rung.preset is not None and rung.preset != s.preset:
        return False
    if rung.width is not None and rung.width != s.width:
        return False
    if rung.height is not None and rung.height != s.height:
        return False
    for attr in ("fps", "bitrate_kbps", "crf"):
        want = getattr(rung, attr)
        if want is not None and not _close(want, getattr(s, attr)):
            return False
    return True


@dataclass(frozen=True)
class RungProjection:
    rung: str
    basis: str  # measured | estimated | predicted
    source: str  # e.g. "3 scenarios (estimate)" or the prediction's basis
    scenario_ids: tuple[str, ...]
    energy_j_per_content_s: float
    monthly_content_hours: float
    monthly_energy_kwh: float  # as measured/predicted (component or wall)
    monthly_billed_kwh: float  # × wall factor (component energy) × PUE
    monthly_energy_cost: float
    compute_basis: str
    monthly_compute_hours: float | None
    monthly_compute_cost: float | None
    monthly_gpu_hours: float | None
    monthly_gpu_cost: float | None
    monthly_total_cost: float | None
    monthly_carbon_kg: float


@dataclass(frozen=True)
class Projection:
    ladder: str
    currency: str
    region: str
    price_per_kwh: float  # time-weighted mean over the encode window
    carbon_g_per_kwh: float
    carbon_source: str
    pue: float
    basis: str
    rungs: tuple[RungProjection, ...]
    monthly_energy_kwh: float
    monthly_billed_kwh: float
    monthly_energy_cost: float
    monthly_total_cost: float | None
    monthly_carbon_kg: float
    missing: tuple[str, ...] = field(default=())  # rungs with neither measurement nor model
    assumptions: tuple[str, ...] = field(default=())


class NoData(ValueError):
    """Some rungs have neither a matching measurement nor a prediction."""


def project(ladder: Ladder, book: PriceBook, measurements: Iterable[Measurement],
            predictor: Predictor | None = None) -> Projection:
    """Monthly energy, cost and carbon of ``ladder``; raises :class:`NoData` naming every rung
    that has no measurement and no prediction."""
    prices = (book.prices_for_region(ladder.region) if ladder.region
              else book.prices_for(ladder.host or ""))
    w = ladder.encode_window
    price = (mean_tariff_price(prices, _minutes(w.start) % 1440, _minutes(w.end)) if w
             else mean_tariff_price(prices))
    ms = list(measurements)
    month_content_s = ladder.content_hours_per_day * 3600.0 * ladder.days_per_month
    out: list[RungProjection] = []
    missing: list[str] = []
    for rung in ladder.rungs:
        mine = [m for m in ms if matches(rung, m.settings) and m.content_s > 0]
        if mine:
            out.append(_from_measurements(rung, mine, prices, price, month_content_s))
            continue
        pred = predictor(rung.settings()) if predictor else None
        if pred is None:
            missing.append(rung.label)
            continue
        out.append(_rung(rung.label, "predicted", pred.basis, (), rung.codec,
                         pred.energy_j_per_content_s, pred.scope, pred.cpu_s_per_content_s,
                         pred.wall_s_per_content_s, prices, price, month_content_s))
    if missing:
        how = "pass a predictor (--predictor MODULE:FUNCTION)" if predictor is None else \
            "the predictor could not predict them either"
        raise NoData(f"no measured scenario matches rung(s) {', '.join(missing)}; measure "
                     f"them or {how}")
    bases = sorted({r.basis for r in out})
    totals = [r.monthly_total_cost for r in out]
    return Projection(
        ladder=ladder.name, currency=prices.currency, region=prices.region, price_per_kwh=price,
        carbon_g_per_kwh=prices.carbon_g_per_kwh, carbon_source=prices.carbon_source,
        pue=prices.pue, basis=bases[0] if len(bases) == 1 else f"mixed ({', '.join(bases)})",
        rungs=tuple(out),
        monthly_energy_kwh=sum(r.monthly_energy_kwh for r in out),
        monthly_billed_kwh=sum(r.monthly_billed_kwh for r in out),
        monthly_energy_cost=sum(r.monthly_energy_cost for r in out),
        monthly_total_cost=(None if any(t is None for t in totals)
                            else sum(t for t in totals if t is not None)),
        monthly_carbon_kg=sum(r.monthly_carbon_kg for r in out),
        assumptions=_assumptions(ladder, prices),
    )


def _from_measurements(rung: Rung, ms: Sequence[Measurement], prices: ResolvedPrices,
                       price: float, month_content_s: float) -> RungProjection:
    content = sum(m.content_s for m in ms)
    # the wall factor applies per measurement (a rung's scenarios could differ in scope)
    wall_j = sum(m.energy_j * (prices.wall_factor if m.scope == "component" else 1.0)
                 for m in ms)
    energy_rate = sum(m.energy_j for m in ms) / content
    basis = "measured" if all(m.basis == "measured" for m in ms) else "estimated"
    sources = sorted({s for m in ms for s in m.sources})
    return _rung(rung.label, basis, f"{len(ms)} scenario(s) ({'+'.join(sources) or basis})",
              tuple(m.scenario_id for m in ms), rung.codec, energy_rate, "component",
              sum(m.cpu_s for m in ms) / content, sum(m.wall_s for m in ms) / content,
              prices, price, month_content_s,
              billed_rate_j=wall_j / content * prices.pue)


def _rung(label: str, basis: str, source: str, ids: tuple[str, ...], codec: str,
          energy_rate: float, scope: str, cpu_rate: float | None, wall_rate: float | None,
          prices: ResolvedPrices, price: float, month_content_s: float,
          billed_rate_j: float | None = None) -> RungProjection:
    if billed_rate_j is None:
        wf = prices.wall_factor if scope == "component" else 1.0
        billed_rate_j = energy_rate * wf * prices.pue
    kwh = energy_rate * month_content_s / J_PER_KWH
    billed = billed_rate_j * month_content_s / J_PER_KWH
    e_cost = billed * price
    rate = cpu_rate if prices.compute_basis == "vcpu_hour" else wall_rate
    c_h = rate * month_content_s / 3600.0 if rate is not None else None
    c_cost = c_h * prices.compute_price_per_hour if c_h is not None else None
    gpu_h = (wall_rate * month_content_s / 3600.0
             if is_gpu_encoder(codec) and wall_rate is not None else None)
    gpu_cost = (gpu_h * prices.gpu_price_per_hour
                if gpu_h is not None and prices.gpu_price_per_hour is not None else None)
    gpu_unpriced = is_gpu_encoder(codec) and gpu_cost is None
    total = (None if c_cost is None or gpu_unpriced
             else e_cost + c_cost + (gpu_cost or 0.0))
    return RungProjection(
        rung=label, basis=basis, source=source, scenario_ids=ids,
        energy_j_per_content_s=energy_rate, monthly_content_hours=month_content_s / 3600.0,
        monthly_energy_kwh=kwh, monthly_billed_kwh=billed, monthly_energy_cost=e_cost,
        compute_basis=prices.compute_basis, monthly_compute_hours=c_h,
        monthly_compute_cost=c_cost, monthly_gpu_hours=gpu_h, monthly_gpu_cost=gpu_cost,
        monthly_total_cost=total, monthly_carbon_kg=billed * prices.carbon_g_per_kwh / 1000.0)


def _assumptions(ladder: Ladder, prices: ResolvedPrices) -> tuple[str, ...]:
    w = ladder.encode_window
    out = [
        f"{ladder.content_hours_per_day:g} h of content per day, every rung encodes all of it,"
        f" {ladder.days_per_month:g} days per month",
        "energy price: time-weighted mean of the tariff over "
        + (f"the encode window {w.start}-{w.end} ({prices.timezone})" if w else "the whole day")
        if prices.tariff else "energy price: flat",
        f"billed kWh = kWh × wall factor {prices.wall_factor:g} (component energy) × "
        f"PUE {prices.pue:g}",
        f"carbon: {prices.carbon_source}",
        "compute: CPU-seconds per content second × price per vCPU-hour"
        if prices.compute_basis == "vcpu_hour" else
        "compute: wall seconds per content second × price per instance-hour (one encode per "
        "instance at a time)",
    ]
    return tuple(out)
