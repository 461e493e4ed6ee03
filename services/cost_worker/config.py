"""The price book: prices, PUE, carbon intensity per region, hosts → regions, one currency.

Validated at start-up (unknown keys, currency, timezone, tariff coverage, regions, grid
codes); :func:`load_price_book` turns every problem into one readable error.

Resolution for a host: its region (``hosts``), else ``default_region``, else the book's
top-level values (region "default").  A field a region leaves unset comes from the top
level; a field unset there too comes from the built-in defaults below — but built-in
*prices* are USD figures, so a book in another currency must set its energy and compute
prices itself (no invented exchange rates).  GPU and egress prices have no default outside
USD: unpriced, those costs are reported as absent, never as zero.

Built-in defaults (sources in docs/cost.md): energy 0.13 USD/kWh (US commercial average,
EIA 2024); 0.031611 USD per vCPU-hour, 0.95 USD per GPU-hour, 0.12 USD per GB internet
egress (OpenCost default price book, GCP us-central1); grid WORLD 475 gCO2e/kWh (IEA 2019,
CodeCarbon's fallback); PUE 1.0 and wall factor 1.0 (no uplift unless configured); UTC.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any

import pycountry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas._base import Name
from shared.configfile import load_yaml

from .grid import WORLD, grid_table
from .logic import MINUTES_PER_DAY, ComputeBasis, ResolvedPrices, TariffSegment

DEFAULT_REGION = "default"

#: built-in USD prices (see the module docstring for sources)
USD_DEFAULTS = {
    "energy_price_per_kwh": 0.13,
    "compute_price_per_vcpu_hour": 0.031611,
    "gpu_price_per_hour": 0.95,
    "egress_price_per_gb": 0.12,
}

Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_HHMM = re.compile(r"^(?:([01]\d|2[0-3]):([0-5]\d)|24:00)$")


def _minutes(hhmm: str) -> int:
    m = _HHMM.match(hhmm)
    if not m:
        raise ValueError(f"{hhmm!r} is not a time of day HH:MM (00:00 … 24:00)")
    return MINUTES_PER_DAY if hhmm == "24:00" else int(m.group(1)) * 60 + int(m.group(2))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class TariffBand(BaseModel):
    """Energy price for local times [start, end); ``end`` ≤ ``start`` wraps past midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str
    end: str
    price_per_kwh: Price

    @field_validator("start", "end")
    @classmethod
    def _time(cls, v: str) -> str:
        _minutes(v)
        return v

    @property
    def label(self) -> str:
        return f"{self.start}-{self.end}"

    def segments(self) -> list[TariffSegment]:
        a, b = _minutes(self.start) % MINUTES_PER_DAY, _minutes(self.end)
        if b <= a:  # wraps past midnight (start == end: the whole day)
            parts = [(a, MINUTES_PER_DAY), (0, b)]
        else:
            parts = [(a, b)]
        return [TariffSegment(x, y, self.price_per_kwh, self.label) for x, y in parts if y > x]


def tariff_segments(bands: list[TariffBand]) -> tuple[TariffSegment, ...]:
    """Segments sorted by start; raises ValueError naming overlaps and uncovered times."""
    segs = sorted((s for b in bands for s in b.segments()), key=lambda s: s.start_min)
    problems = []
    pos = 0
    prev: TariffSegment | None = None
    for s in segs:
        if s.start_min < pos and prev is not None:
            problems.append(f"bands {prev.label} and {s.label} overlap "
                            f"({_hhmm(s.start_min)}-{_hhmm(min(pos, s.end_min))})")
        elif s.start_min > pos:
            problems.append(f"{_hhmm(pos)}-{_hhmm(s.start_min)} is not covered")
        if s.end_min > pos:
            pos, prev = s.end_min, s
    if pos < MINUTES_PER_DAY:
        problems.append(f"{_hhmm(pos)}-24:00 is not covered")
    if problems:
        raise ValueError("energy_tariff must cover the day exactly once: " + "; ".join(problems))
    return tuple(segs)


class Prices(BaseModel):
    """Fields a region may set; unset (None) falls back to the book's top level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    energy_price_per_kwh: Price | None = None
    energy_tariff: list[TariffBand] | None = None
    timezone: str | None = None  # IANA name for the tariff's local times, e.g. Europe/Berlin
    compute_price_per_vcpu_hour: Price | None = None
    compute_price_per_instance_hour: Price | None = None
    gpu_price_per_hour: Price | None = None
    egress_price_per_gb: Price | None = None
    pue: float | None = Field(default=None, ge=1.0, le=5.0)
    #: multiply component energy (RAPL, CPU estimate) by this to approximate wall energy
    wall_factor: float | None = Field(default=None, ge=1.0, le=10.0)
    #: a code of the shipped grid table (ISO 3166-1 alpha-3 country, or WORLD)
    grid: str | None = None
    #: explicit intensity, gCO2e/kWh; wins over ``grid``
    carbon_g_per_kwh: float | None = Field(default=None, ge=0, le=2000)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown timezone {v!r} (use an IANA name such as "
                                 "Europe/Berlin or UTC)") from e
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: str | None) -> str | None:
        if v is not None and v not in grid_table():
            raise ValueError(f"unknown grid {v!r}; shipped codes: {', '.join(sorted(grid_table()))}"
                             " (or set carbon_g_per_kwh)")
        return v

    @field_validator("energy_tariff")
    @classmethod
    def _tariff(cls, v: list[TariffBand] | None) -> list[TariffBand] | None:
        if v is not None:
            if not v:
                raise ValueError("energy_tariff needs at least one band")
            tariff_segments(v)
        return v

    @model_validator(mode="after")
    def _one_of_each(self) -> Prices:
        if self.energy_price_per_kwh is not None and self.energy_tariff is not None:
            raise ValueError("set energy_price_per_kwh or energy_tariff, not both")
        if (self.compute_price_per_vcpu_hour is not None
                and self.compute_price_per_instance_hour is not None):
            raise ValueError("set compute_price_per_vcpu_hour or compute_price_per_instance_hour,"
                             " not both")
        return self


class PriceBook(Prices):
    """A whole price book; its top-level price fields are the "default" region."""

    name: Name = "default-2024"
    currency: str = "USD"  # ISO 4217; one per book
    #: times each hour of content is watched in full (spreads encode cost over viewer-hours)
    audience_views: float | None = Field(default=None, gt=0)
    regions: dict[Name, Prices] = Field(default_factory=dict)
    hosts: dict[Name, Name] = Field(default_factory=dict)  # host → region
    default_region: Name | None = None  # region of hosts not listed in ``hosts``

    _resolved: dict[str, ResolvedPrices] = PrivateAttr(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v) or pycountry.currencies.get(alpha_3=v) is None:
            raise ValueError(f"{v!r} is not an ISO 4217 currency code (e.g. USD, EUR, GBP)")
        return v

    @model_validator(mode="after")
    def _regions(self) -> PriceBook:
        if DEFAULT_REGION in self.regions:
            raise ValueError(f"region name {DEFAULT_REGION!r} is reserved for the top level")
        unknown = sorted({f"{h} → {r}" for h, r in self.hosts.items() if r not in self.regions})
        if unknown:
            raise ValueError(f"hosts map to unknown regions: {', '.join(unknown)} "
                             f"(regions: {', '.join(sorted(self.regions)) or 'none'})")
        if self.default_region is not None and self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} is not in regions")
        resolved = {DEFAULT_REGION: self._resolve(DEFAULT_REGION, Prices())}
        for name, r in self.regions.items():
            resolved[name] = self._resolve(name, r)
        self._resolved = resolved
        return self

    def _resolve(self, region: str, r: Prices) -> ResolvedPrices:
        def pick(field: str) -> Any:
            v = getattr(r, field)
            return v if v is not None else getattr(self, field)

        def price(field: str, required: bool) -> float | None:
            v = pick(field)
            if v is None and self.currency == "USD":
                v = USD_DEFAULTS.get(field)
            if v is None and required:
                raise ValueError(f"region {region!r}: set {field} (built-in prices are USD and "
                                 f"this book is in {self.currency}; no exchange rates are used)")
            return v

        # energy: the region's own flat price or tariff wins over the top level's
        if r.energy_price_per_kwh is not None or r.energy_tariff is not None:
            flat, bands = r.energy_price_per_kwh, r.energy_tariff
        else:
            flat, bands = self.energy_price_per_kwh, self.energy_tariff
        if flat is None and bands is None:
            flat = price("energy_price_per_kwh", required=True)
        # compute: per vCPU-hour or per instance-hour, the most specific level decides
        basis: ComputeBasis
        if r.compute_price_per_instance_hour is not None:
            basis, cprice = "instance_hour", r.compute_price_per_instance_hour
        elif r.compute_price_per_vcpu_hour is not None:
            basis, cprice = "vcpu_hour", r.compute_price_per_vcpu_hour
        elif self.compute_price_per_instance_hour is not None:
            basis, cprice = "instance_hour", self.compute_price_per_instance_hour
        else:
            basis = "vcpu_hour"
            cprice = price("compute_price_per_vcpu_hour", required=True)  # type: ignore[assignment]
        assert cprice is not None
        explicit = pick("carbon_g_per_kwh")
        if explicit is not None:
            carbon, source = float(explicit), f"price book {self.name}"
        else:
            g = grid_table()[pick("grid") or WORLD]
            carbon, source = g.g_co2e_per_kwh, g.citation
        pue, wall = pick("pue"), pick("wall_factor")
        return ResolvedPrices(
            region=region, currency=self.currency, energy_price_per_kwh=flat,
            tariff=tariff_segments(bands) if bands else (), timezone=pick("timezone") or "UTC",
            compute_basis=basis, compute_price_per_hour=cprice,
            gpu_price_per_hour=price("gpu_price_per_hour", required=False),
            egress_price_per_gb=price("egress_price_per_gb", required=False),
            pue=pue if pue is not None else 1.0, wall_factor=wall if wall is not None else 1.0,
            carbon_g_per_kwh=carbon, carbon_source=source)

    def region_of(self, host: str) -> str:
        return self.hosts.get(host) or self.default_region or DEFAULT_REGION

    def prices_for_region(self, region: str) -> ResolvedPrices:
        try:
            return self._resolved[region]
        except KeyError:
            raise KeyError(f"unknown region {region!r}; have {sorted(self._resolved)}") from None

    def prices_for(self, host: str) -> ResolvedPrices:
        """Everything that prices work on ``host`` (its region, defaults filled in)."""
        return self._resolved[self.region_of(host)]


class PriceBookError(ValueError):
    pass


def load_price_book(path: str | None) -> PriceBook:
    """Read and validate a YAML price book (None: the built-in USD defaults).

    Raises :class:`PriceBookError` listing every problem as ``field.path: message``.
    """
    if not path:
        return PriceBook()
    p = Path(path)
    doc = load_yaml(p, "price book", PriceBookError)
    if doc is not None and not isinstance(doc, dict):
        raise PriceBookError(f"price book {p} must be a mapping of keys to values")
    try:
        return PriceBook.model_validate(doc or {})
    except ValidationError as e:
        raise PriceBookError(f"price book {p} is invalid:\n{format_errors(e)}") from e


def format_errors(e: ValidationError) -> str:
    lines = []
    for x in e.errors():
        loc = ".".join(map(str, x["loc"])) or "<top level>"
        msg = x["msg"].removeprefix("Value error, ")
        if x["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


class CostConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_COST_", frozen=True, extra="ignore")

    price_book: str | None = None
