"""Common base for every event model.

Every topic payload is a frozen pydantic v2 model with ``extra="forbid"`` and an explicit
``schema_version``; no bare dict crosses an adapter boundary.  Floats must be finite
(``allow_inf_nan=False``): a NaN energy is a bug upstream, never a value to pass on.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: Which kind of figure an energy or power number is.
Basis = Literal["measured", "estimated"]
#: What a power figure covers: CPU/GPU components (RAPL, NVML, CPU-time model) or the wall.
Scope = Literal["component", "wall"]

NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: Clocks of publishing hosts may be off; a timestamp further ahead than this is rejected
#: (a far-future end would otherwise hold a scenario pending for ever).
MAX_CLOCK_SKEW_NS = 24 * 3600 * 10**9


def _not_in_future(ts_ns: int) -> int:
    if ts_ns > time.time_ns() + MAX_CLOCK_SKEW_NS:
        raise ValueError("timestamp is more than 24 h in the future (clock wrong?)")
    return ts_ns


#: Wall-clock time in UTC nanoseconds since the epoch (from 2000, at most 24 h ahead of now).
TimestampNs = Annotated[
    int,
    Field(ge=946_684_800_000_000_000, le=7_258_118_400_000_000_000),
    AfterValidator(_not_in_future),
]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/+\-]+$")]
ShortText = Annotated[str, Field(max_length=4000)]


class Event(BaseModel):
    """Base of all topic payloads: immutable, strict about unknown fields, finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes):  # type: ignore[no-untyped-def]
        return cls.model_validate_json(raw)
