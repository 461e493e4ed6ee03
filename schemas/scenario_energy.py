"""Topic ``scenario.energy`` — energy of one scenario, the join of power with scenarios.

Key: scenario_id.  Idempotent: the same inputs always yield the same record under the same
key.  ``energy_j`` is never a silent zero: ``complete`` says whether samples covered the
whole window, ``coverage`` how much of it they covered and ``max_gap_s`` the largest gap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Basis, Event, Name, NonNegFloat, Scope, TimestampNs
from .scenario_events import EncodeSettings, HardwareInfo

TOPIC = "scenario.energy"
SCHEMA_VERSION = 1


class ScenarioEnergy(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    scenario_id: Name
    host: Name
    run_id: Name | None = None
    settings: EncodeSettings
    start_ns: TimestampNs
    end_ns: TimestampNs
    wall_s: NonNegFloat
    #: total energy of the host's non-overlapping zones over the window, joules
    energy_j: NonNegFloat
    #: per-zone energy over the window, joules
    zones_j: dict[Name, NonNegFloat]
    basis: Basis  # measured (RAPL/NVML/plug) or estimated (CPU-time model)
    sources: list[Name]  # e.g. ["rapl"], ["estimate"]
    scope: Scope  # component (CPU/GPU) or wall (smart plug)
    mean_power_w: NonNegFloat
    peak_power_w: NonNegFloat | None = None  # highest sample-interval power inside the window
    #: idle power of the host (from the latest idle baseline), if one was measured
    idle_power_w: NonNegFloat | None = None
    #: energy above idle: energy_j - idle_power_w * wall_s (floored at 0), if idle known
    dynamic_energy_j: NonNegFloat | None = None
    cpu_s: NonNegFloat = 0.0
    frames: int = Field(default=0, ge=0)
    output_bytes: int | None = Field(default=None, ge=0)
    output_path: str | None = Field(default=None, max_length=4096)
    reference_path: str | None = Field(default=None, max_length=4096)
    achieved_fps: NonNegFloat | None = None
    hardware: HardwareInfo | None = None
    #: fraction of the window covered by samples (1.0 = both ends bracketed by samples)
    coverage: float = Field(ge=0.0, le=1.0)
    max_gap_s: NonNegFloat
    complete: bool
    n_samples: int = Field(ge=0)
    #: ``watermark`` when samples covered the end; ``timeout`` when emitted without them
    emitted_by: Literal["watermark", "timeout"]
    wrap_ambiguous: bool = False
    computed_at_ns: TimestampNs | None = None
    #: energy measured at the wall (smart plug) over the same window, when the host has one
    #: and ``energy_j`` comes from component sensors; the two are never added together
    wall_energy_j: NonNegFloat | None = None
    wall_coverage: float | None = Field(default=None, ge=0.0, le=1.0)
    #: the idle-baseline window (scenario id) ``idle_power_w`` comes from: the latest
    #: complete one of the same power stream that ended at or before this scenario started
    idle_baseline_id: Name | None = None
    #: how many other scenarios overlapped this one on the same host
    concurrent_scenarios: int = Field(default=0, ge=0)
    #: this scenario's share of the host's dynamic energy over its window, split with the
    #: overlapping scenarios by CPU time (Kepler's approach); equals ``dynamic_energy_j``
    #: (before flooring) when nothing overlapped.  None without an idle baseline.
    attributed_dynamic_energy_j: NonNegFloat | None = None
    #: time-weighted mean of this scenario's CPU share among the scenarios active with it
    cpu_share: float | None = Field(default=None, ge=0.0, le=1.0)
