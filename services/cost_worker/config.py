"""The price book: prices, PUE, carbon intensity, one currency.  Validated at start-up.

Defaults (see docs/cost.md for sources): energy 0.13 USD/kWh (US commercial average,
EIA 2024); compute 0.031611 USD per vCPU-hour (OpenCost default price book, GCP
us-central1); carbon 475 gCO2e/kWh (world average, IEA 2019, CodeCarbon's fallback);
PUE 1.0 and wall factor 1.0 (no uplift unless configured).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class PriceBook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default-2024"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    energy_price_per_kwh: float = Field(default=0.13, ge=0)
    compute_price_per_vcpu_hour: float = Field(default=0.031611, ge=0)
    carbon_g_per_kwh: float = Field(default=475.0, ge=0, le=2000)
    pue: float = Field(default=1.0, ge=1.0, le=5.0)
    #: multiply component energy (RAPL, CPU estimate) by this to approximate wall energy
    wall_factor: float = Field(default=1.0, ge=1.0, le=10.0)


class PriceBookError(ValueError):
    pass


def load_price_book(path: str | None) -> PriceBook:
    if not path:
        return PriceBook()
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as e:
        raise PriceBookError(f"cannot read price book {p}: {e}") from e
    except yaml.YAMLError as e:
        raise PriceBookError(f"price book {p} is not valid YAML: {e}") from e
    try:
        return PriceBook.model_validate(doc or {})
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]
        raise PriceBookError(f"price book {p} is invalid:\n" + "\n".join(lines)) from e


class CostConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_COST_", frozen=True, extra="ignore")

    price_book: str | None = None
