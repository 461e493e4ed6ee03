"""Default grid carbon intensities shipped with the package (shared/data/grid_carbon_intensity.csv).

Country values: Our World in Data 2023 (as shipped in CodeCarbon); WORLD: IEA 2019.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class GridIntensity:
    code: str  # ISO 3166-1 alpha-3, or WORLD
    name: str
    g_co2e_per_kwh: float
    source: str
    year: int

    @property
    def citation(self) -> str:
        return f"{self.code} {self.g_co2e_per_kwh:g} g/kWh ({self.source}, {self.year})"


@functools.cache
def grid_table() -> dict[str, GridIntensity]:
    """Code → default intensity.  Read once from the package data."""
    text = resources.files("shared").joinpath("data/grid_carbon_intensity.csv").read_text(
        encoding="utf-8")
    rows = csv.DictReader(io.StringIO(
        "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))))
    out = {}
    for r in rows:
        out[r["code"]] = GridIntensity(r["code"], r["name"], float(r["g_co2e_per_kwh"]),
                                       r["source"], int(r["year"]))
    return out


WORLD = "WORLD"
