"""Topic ``power.samples`` — power samples of one host, batched.

Key: host name (UTF-8).  Co-partitioned with ``scenario.events`` (same key, same partition
count) so one energy_worker instance sees all samples and scenarios of its hosts.

Energy is carried as **cumulative, wrap-corrected joules per zone** since the collector run
began (``run_id``); downstream energy over [a, b] is the counter interpolated at b minus at a.
Power (watts) is a convenience, derived from the counter over the previous interval.
Zones in one message never overlap: the total of a sample is the plain sum of
``energy_j`` over the zones flagged ``in_total``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._base import Basis, Event, Name, NonNegFloat, Scope, TimestampNs

TOPIC = "power.samples"
SCHEMA_VERSION = 1

SourceName = Literal["rapl", "nvml", "mqtt_plug", "estimate", "fake"]


class Zone(Event):
    """One measured or estimated energy domain of a host."""

    name: Name  # e.g. "package-0", "dram-0", "psys", "gpu-0", "plug:rack1", "cpu"
    #: package/core/uncore/dram/psys: RAPL; gpu: NVML; wall: a smart plug (scope wall);
    #: cpu_estimate: the CPU-time model
    kind: Literal["package", "core", "uncore", "dram", "psys", "gpu", "wall", "cpu_estimate"]
    source: SourceName
    basis: Basis
    scope: Scope
    #: True when this zone's joules count towards the host total (no overlap with others).
    in_total: bool = True


class Sample(Event):
    """One reading of every zone at one instant."""

    seq: int = Field(ge=0)  # per host and run, increasing by one per sample
    ts_ns: TimestampNs  # wall clock, UTC ns
    mono_ns: int = Field(ge=0)  # monotonic clock of the collector, for intervals
    #: cumulative joules per zone name since the run began (wrap-corrected)
    energy_j: dict[Name, NonNegFloat]
    #: mean power per zone over the interval ending at this sample (absent on the first)
    power_w: dict[Name, NonNegFloat] = Field(default_factory=dict)
    #: zones whose interval was long enough to hide more than one counter wrap
    wrap_ambiguous: list[Name] = Field(default_factory=list)
    #: NVENC utilisation per GPU zone, percent of the driver's sampling period (NVML);
    #: only GPUs that report it appear
    encoder_util_pct: dict[Name, Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        default_factory=dict)


class PowerSamples(Event):
    """A batch of consecutive samples of one host."""

    schema_version: Literal[1] = SCHEMA_VERSION
    host: Name
    #: identifies one collector run: counters restart at zero with a new run
    run_id: Name
    zones: list[Zone] = Field(min_length=1, max_length=256)
    samples: list[Sample] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> PowerSamples:
        names = {z.name for z in self.zones}
        if len(names) != len(self.zones):
            raise ValueError("duplicate zone names")
        prev = -1
        for s in self.samples:
            if s.seq <= prev:
                raise ValueError("samples must be in increasing seq order")
            prev = s.seq
            unknown = set(s.energy_j) - names
            if unknown:
                raise ValueError(
                    f"sample {s.seq} has readings for undeclared zones {sorted(unknown)}")
        return self
