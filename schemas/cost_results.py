"""Topic ``cost.results`` — money and carbon of one scenario.

Key: scenario_id.  Carries the energy basis through: a cost computed from estimated energy
says so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Basis, Event, Name, NonNegFloat, Scope

TOPIC = "cost.results"
SCHEMA_VERSION = 1


class CostResult(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    scenario_id: Name
    host: Name
    currency: str = Field(pattern=r"^[A-Z]{3}$")  # ISO 4217
    energy_j: NonNegFloat
    energy_basis: Basis
    energy_scope: Scope
    #: energy at the wall used for money and carbon (component energy × wall factor × PUE)
    billed_energy_kwh: NonNegFloat
    energy_cost: NonNegFloat
    compute_cost: NonNegFloat
    total_cost: NonNegFloat
    carbon_g: NonNegFloat  # grams CO2e
    price_per_kwh: NonNegFloat
    carbon_intensity_g_per_kwh: NonNegFloat
    pue: float = Field(ge=1.0, le=5.0)
    wall_factor: float = Field(ge=1.0, le=10.0)
    price_book: Name  # name/version of the price book used
    cost_per_megapixel: NonNegFloat | None = None
    cost_per_content_hour: NonNegFloat | None = None
