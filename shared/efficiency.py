"""Efficiency figures, defined once for the whole system (cost worker, report, metrics,
trainer).  Pure functions over plain numbers; every one returns ``None`` rather than a
made-up value when the energy is not positive or an input is missing.

* pixels encoded            = width × height × frames (frames of all streams together)
* VMAF per kJ               = VMAF ÷ (energy J / 1000)
* pixels per joule          = pixels ÷ energy J
* quality-weighted px per J = pixels × VMAF/100 ÷ energy J  ("pixels at full quality per joule")

The energy is whatever the caller passes (measured or estimated, component or wall): the
caller carries its basis next to the figure.
"""

from __future__ import annotations

import math

__all__ = [
    "pixels_encoded",
    "pixels_per_joule",
    "quality_weighted_pixels_per_joule",
    "vmaf_per_kj",
]


def _usable_energy(energy_j: float | None) -> bool:
    return energy_j is not None and math.isfinite(energy_j) and energy_j > 0


def pixels_encoded(width: int, height: int, frames: int) -> float | None:
    """Pixels of an encode: width × height × frames; None when any of them is zero."""
    if width <= 0 or height <= 0 or frames <= 0:
        return None
    return float(width) * float(height) * float(frames)


def vmaf_per_kj(vmaf: float | None, energy_j: float | None) -> float | None:
    """VMAF points per kilojoule (None when VMAF is unknown or energy is not positive)."""
    if vmaf is None or not _usable_energy(energy_j):
        return None
    assert energy_j is not None
    return vmaf / (energy_j / 1000.0)


def pixels_per_joule(pixels: float | None, energy_j: float | None) -> float | None:
    """Pixels encoded per joule (None when pixels are unknown or energy is not positive)."""
    if pixels is None or not _usable_energy(energy_j):
        return None
    assert energy_j is not None
    return pixels / energy_j


def quality_weighted_pixels_per_joule(pixels: float | None, vmaf: float | None,
                                      energy_j: float | None) -> float | None:
    """pixels × VMAF/100 ÷ J: pixels delivered at full quality per joule."""
    if pixels is None or vmaf is None or not _usable_energy(energy_j):
        return None
    assert energy_j is not None
    return pixels * vmaf / 100.0 / energy_j
