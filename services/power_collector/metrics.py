"""power_collector metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class EnergySnapshot(Collector):
    """Exposes the collector's own cumulative, wrap-corrected joules as a true counter.

    The sampler writes the latest value per label set; each scrape reads that snapshot
    (scrapes never trigger a read of the hardware)."""

    LABELS = ("host", "zone", "source", "basis")

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str, str], float] = {}

    def labels(self, *labels: str) -> _Setter:
        return _Setter(self, tuple(labels))  # type: ignore[arg-type]

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("joulestream_energy_joules",
                                  "Cumulative wrap-corrected energy per zone since collector start",
                                  labels=self.LABELS)
        for lab, v in list(self.values.items()):
            fam.add_metric(list(lab), v)
        yield fam


class _Setter:
    def __init__(self, snap: EnergySnapshot, key: tuple[str, str, str, str]) -> None:
        self.snap, self.key = snap, key
        snap.values.setdefault(key, 0.0)

    def set(self, v: float) -> None:
        self.snap.values[self.key] = v


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["host", "zone", "source", "basis"]
        self.power = Gauge("joulestream_power_watts",
                           "Power per zone over the last sampling interval", labels,
                           registry=registry)
        self.energy = EnergySnapshot()
        registry.register(self.energy)
        self.lag = Gauge("joulestream_power_collector_sampling_lag_seconds",
                         "How late the last sample was taken after its deadline",
                         registry=registry)
        self.missed = Counter("joulestream_power_collector_missed_deadlines_total",
                              "Sampling deadlines skipped because the loop overran",
                              registry=registry)
        self.spool = Gauge("joulestream_power_collector_spool_samples",
                           "Samples waiting to be delivered to the broker", registry=registry)
        self.dropped = Counter("joulestream_power_collector_dropped_samples_total",
                               "Samples dropped because the spool bound was exceeded",
                               registry=registry)
        self.read_errors = Counter("joulestream_power_collector_read_errors_total",
                                   "Samples skipped because a reading failed", registry=registry)
        self.published = Counter("joulestream_power_collector_published_samples_total",
                                 "Samples delivered to the broker", registry=registry)
        self.encoder = Gauge("joulestream_power_collector_encoder_utilization_ratio",
                             "NVENC utilisation per GPU over NVML's sampling period (0-1)",
                             ["host", "zone"], registry=registry)
        self.info = Info("joulestream_power_collector_source", "The power sources in use and why",
                         registry=registry)
