"""Prometheus metrics for cost, carbon and efficiency, with bounded label sets.

Labels are codec, preset, resolution class and energy basis — never a scenario id.
Resolution is bucketed by height into a fixed set of classes; codec and preset keep the
first :data:`MAX_VALUES` distinct values seen and map later ones to ``other``, so a flood
of odd settings cannot grow the series count without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.cost_results import CostResult
from schemas.scenario_events import EncodeSettings

MAX_VALUES = 16
OTHER = "other"

#: height upper bounds → class name
_RES_CLASSES = ((240, "240p"), (360, "360p"), (480, "480p"), (576, "576p"), (720, "720p"),
                (1080, "1080p"), (1440, "1440p"), (2160, "2160p"), (4320, "4320p"))


def resolution_class(width: int, height: int) -> str:
    """``720p`` etc. by the smaller side (portrait video too); ``unknown`` when zero."""
    side = min(width, height) if width and height else height or width
    if side <= 0:
        return "unknown"
    for bound, name in _RES_CLASSES:
        if side <= bound:
            return name
    return "above-4320p"


class BoundedLabel:
    """Keeps at most ``limit`` distinct values; anything new beyond that becomes ``other``."""

    def __init__(self, limit: int = MAX_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        v = value or "none"
        if v in self.seen:
            return v
        if len(self.seen) < self.limit:
            self.seen.add(v)
            return v
        return OTHER


_LABELS = ["codec", "preset", "resolution", "basis"]
_MONEY_BUCKETS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100)


class CostMetrics:
    """``joulestream_cost_worker_*`` cost, carbon and efficiency series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "joulestream_cost_worker"
        self.codec, self.preset = BoundedLabel(), BoundedLabel()
        cur = ["currency"]
        self.cost = Histogram(f"{p}_scenario_cost", "Total cost per scenario, in the currency "
                              "label", [*_LABELS, *cur], registry=registry,
                              buckets=_MONEY_BUCKETS)
        self.cost_per_mp = Histogram(f"{p}_cost_per_megapixel", "Cost per megapixel encoded",
                                     [*_LABELS, *cur], registry=registry,
                                     buckets=(1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5,
                                              1e-4))
        self.cost_per_vh = Histogram(f"{p}_cost_per_viewer_hour", "Encode share plus delivery "
                                     "per viewer watch-hour", [*_LABELS, *cur],
                                     registry=registry, buckets=_MONEY_BUCKETS)
        self.carbon = Counter(f"{p}_carbon_grams_total", "gCO2e of priced scenarios", _LABELS,
                              registry=registry)
        self.kwh = Counter(f"{p}_billed_energy_kwh_total", "Billed energy (× wall factor × "
                           "PUE) of priced scenarios, kWh", _LABELS, registry=registry)
        self.vmaf_per_kj = Histogram(f"{p}_vmaf_per_kilojoule", "VMAF points per kJ of the "
                                     "encode", _LABELS, registry=registry,
                                     buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500,
                                              1000, 5000))
        self.px_per_j = Histogram(f"{p}_pixels_per_joule", "Pixels encoded per joule", _LABELS,
                                  registry=registry,
                                  buckets=(1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8))
        self.qw_px_per_j = Histogram(f"{p}_quality_weighted_pixels_per_joule",
                                     "Pixels × VMAF/100 per joule", _LABELS, registry=registry,
                                     buckets=(1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8))

    def labels_of(self, s: EncodeSettings, basis: str) -> tuple[str, str, str, str]:
        return (self.codec(s.codec), self.preset(s.preset), resolution_class(s.width, s.height),
                basis)

    def observe_cost(self, labels: tuple[str, str, str, str], c: CostResult) -> None:
        self.cost.labels(*labels, c.currency).observe(c.total_cost)
        self.carbon.labels(*labels).inc(c.carbon_g)
        self.kwh.labels(*labels).inc(c.billed_energy_kwh)
        if c.cost_per_megapixel is not None:
            self.cost_per_mp.labels(*labels, c.currency).observe(c.cost_per_megapixel)
        if c.cost_per_viewer_hour is not None:
            self.cost_per_vh.labels(*labels, c.currency).observe(c.cost_per_viewer_hour)
        if c.pixels_per_joule is not None:
            self.px_per_j.labels(*labels).observe(c.pixels_per_joule)

    def observe_quality(self, labels: tuple[str, str, str, str], vmaf_per_kj: float | None,
                        qw_px_per_j: float | None) -> None:
        if vmaf_per_kj is not None:
            self.vmaf_per_kj.labels(*labels).observe(vmaf_per_kj)
        if qw_px_per_j is not None:
            self.qw_px_per_j.labels(*labels).observe(qw_px_per_j)
