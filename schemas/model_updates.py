"""Topic ``model.updates`` — a newly trained model is available.

Key: ``<target>@<hardware>`` (hardware class, or ``global``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Event, Name, NonNegFloat, TimestampNs


class CvScore(Event):
    mae: NonNegFloat
    mape: NonNegFloat  # fraction, 0.05 = 5 %
    folds: int = Field(ge=2)
    grouping: Name  # what whole groups the folds hold out


class IntervalScore(Event):
    """A prediction interval and how often it held on held-out groups."""

    level: float = Field(gt=0.0, lt=1.0)  # nominal coverage, 0.9 = 90 %
    #: half-width; in natural-log units (multiplicative interval) when log_scale
    half_width: NonNegFloat
    log_scale: bool
    method: Name  # e.g. "split-conformal"
    measured_coverage: float | None = Field(default=None, ge=0.0, le=1.0)
    coverage_n: int = Field(default=0, ge=0)  # held-out records the coverage was measured on


TOPIC = "model.updates"
SCHEMA_VERSION = 1


class ModelUpdate(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    model_id: Name
    target: Name
    unit: Name
    algorithm: Name
    features: list[Name]
    n_samples: int = Field(ge=1)
    cv: CvScore
    baseline_cv: CvScore | None = None  # plain linear baseline, for comparison
    hardware: Name  # hardware class the model is for ("global" for all)
    dataset_hash: Name
    path: str = Field(max_length=4096)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    trained_at_ns: TimestampNs
    # additions (optional, schema_version stays 1)
    version: int | None = Field(default=None, ge=1)  # per (target, hardware) in the registry
    interval: IntervalScore | None = None
