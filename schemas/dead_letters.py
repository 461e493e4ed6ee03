"""Topics ``<topic>.dlq`` — messages a worker could not accept, with the reason.

Key: the original key.  The original bytes are kept (base64) so nothing is lost; the
reason says what was wrong in words a person can act on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Event, Name, TimestampNs

SUFFIX = ".dlq"
SCHEMA_VERSION = 1


def dlq_topic(topic: str) -> str:
    return topic + SUFFIX


class DeadLetter(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    source_topic: Name
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key_b64: str | None = None
    value_b64: str
    reason: str = Field(max_length=8000)
    error_type: Name
    service: Name
    ts_ns: TimestampNs
