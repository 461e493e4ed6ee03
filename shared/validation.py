"""Turning pydantic validation errors into one-line reasons for dead letters."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(e: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<message>"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = e.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return f"schema violation ({e.title}): " + "; ".join(parts)
