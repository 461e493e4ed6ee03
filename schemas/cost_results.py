"""Topic ``cost.results`` — money and carbon of one scenario.

Key: scenario_id.  Carries the energy basis through: a cost computed from estimated energy
says so.  Money is in ``currency`` (the price book's one currency).  Fields after
``cost_per_content_hour`` were added later and are optional: absent means "not known"
(e.g. no audience configured, no egress price, no output size), never zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Basis, Event, Name, NonNegFloat, Scope, ShortText

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
    #: region of the price book the host maps to ("default" = the book's top level)
    region: Name | None = None
    energy_sources: list[Name] = Field(default_factory=list)  # e.g. ["rapl"], ["estimate"]
    #: time-of-day band the energy price came from ("flat" when the price has no bands)
    price_band: Name | None = None
    carbon_intensity_source: ShortText | None = None  # e.g. "DEU 381 g/kWh (OWID, 2023)"
    #: vcpu_hour: CPU-seconds / 3600; instance_hour: wall seconds / 3600
    compute_basis: Literal["vcpu_hour", "instance_hour"] | None = None
    compute_hours: NonNegFloat | None = None
    gpu_hours: NonNegFloat | None = None  # wall hours of a GPU encoder; None for CPU encoders
    gpu_cost: NonNegFloat | None = None  # included in total_cost
    megapixels: NonNegFloat | None = None  # width × height × frames / 1e6
    content_hours: NonNegFloat | None = None  # duration × streams / 3600
    pixels_per_joule: NonNegFloat | None = None
    #: real bitrate of one output stream, kbit/s (output bytes, not the target)
    output_bitrate_kbps: NonNegFloat | None = None
    delivery_gb_per_viewer_hour: NonNegFloat | None = None  # decimal GB (1e9 bytes)
    egress_price_per_gb: NonNegFloat | None = None
    delivery_cost_per_viewer_hour: NonNegFloat | None = None
    audience_views: NonNegFloat | None = None  # full views of each content hour
    encode_cost_per_viewer_hour: NonNegFloat | None = None  # cost per content hour / views
    #: encode share + delivery of one viewer-hour
    cost_per_viewer_hour: NonNegFloat | None = None
