"""Topic ``host.baselines`` — the idle baselines of a host, as the energy worker measured them.

Key: host name (co-partitioned with ``power.samples`` and ``scenario.events``).  The topic is
compacted: only the latest record per host matters, and it carries the host's recent
baselines (not just the newest), so a restarted or rebalanced energy worker reads back
everything it needs to compute dynamic energy exactly as before.  Produced by the
energy worker only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import Basis, Event, Name, NonNegFloat, Scope, TimestampNs

TOPIC = "host.baselines"
SCHEMA_VERSION = 1


class Baseline(Event):
    """Mean power of one complete idle-baseline window (``codec: idle``) of one stream."""

    scenario_id: Name  # the idle window
    start_ns: TimestampNs
    end_ns: TimestampNs
    idle_power_w: NonNegFloat
    #: the power stream it was measured on: ``zone@source`` pairs, comma-separated, sorted
    stream: Annotated[str, Field(min_length=1, max_length=4000)]
    basis: Basis
    scope: Scope


class HostBaselines(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    host: Name
    #: oldest first
    baselines: list[Baseline] = Field(max_length=256)
