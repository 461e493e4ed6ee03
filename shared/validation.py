"""Turning pydantic validation errors into one-line reasons for dead letters."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(e: ValidationError, limit: int = 5) -> str:
    """``schema violation (Model): field.path: message; …`` — short enough for a log line."""
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<message>"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = e.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    title = e.title
    if title.startswith("tagged-union["):  # the scenario event union: name its members plainly
        title = "scenario event"
    return f"schema violation ({title}): " + "; ".join(parts)
