"""Pure parts of the power collector: counter wrap correction and the CPU-time estimate.

No I/O here: readings come in as plain numbers, with the clock as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CounterTracker:
    """Turns a raw wrapping energy counter (µJ) into cumulative joules.

    The kernel's ``energy_uj`` counts from 0 to ``max_energy_range_uj`` inclusive and then
    wraps to 0, so one wrap adds ``max_range_uj + 1``.  When the interval between two reads
    is long enough that the counter could have wrapped more than once at the zone's maximum
    plausible power, the reading is flagged ``ambiguous`` (one wrap is assumed, not guessed
    further) so downstream can say so.
    """

    max_range_uj: int
    max_power_w: float = 500.0
    last_raw_uj: int | None = None
    last_mono_ns: int | None = None
    total_uj: int = 0
    wraps: int = 0

    def update(self, raw_uj: int, mono_ns: int) -> tuple[float, bool]:
        """Feed one raw reading; returns (cumulative joules, interval ambiguous?)."""
        ambiguous = False
        if self.last_raw_uj is not None and self.last_mono_ns is not None:
            delta = raw_uj - self.last_raw_uj
            if delta < 0:
                delta += self.max_range_uj + 1
                self.wraps += 1
            dt_s = max(0, mono_ns - self.last_mono_ns) / 1e9
            # the most energy the zone could plausibly spend in dt; above one range → 2+ wraps
            ambiguous = dt_s * self.max_power_w * 1e6 > self.max_range_uj
            self.total_uj += delta
        self.last_raw_uj = raw_uj
        self.last_mono_ns = mono_ns
        return self.total_uj / 1e6, ambiguous


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU jiffies from /proc/stat: busy and total."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    """Parse the aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq
    softirq steal ...).  Guest time is already included in user/nice and is not re-added."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            vals = [int(v) for v in line.split()[1:]]
            vals += [0] * (8 - len(vals))
            user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
            idle_all = idle + iowait
            busy = user + nice + system + irq + softirq + steal
            return CpuTimes(busy=busy, total=busy + idle_all)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


@dataclass
class CpuTimeEstimator:
    """Estimated host power from CPU utilisation: P = idle + (max − idle) × utilisation.

    A linear CPU-time model (as CodeCarbon's and Kepler's fallbacks): it ignores frequency,
    AVX and memory-bound effects, so every figure it produces is labelled ``estimated``.
    """

    idle_w: float
    max_w: float
    last: CpuTimes | None = None
    last_mono_ns: int | None = None
    energy_j: float = 0.0
    power_w: float | None = None

    def update(self, times: CpuTimes, mono_ns: int) -> tuple[float, float | None]:
        """Feed one /proc/stat reading; returns (cumulative joules, power over interval)."""
        if self.last is not None and self.last_mono_ns is not None:
            dt_s = max(0, mono_ns - self.last_mono_ns) / 1e9
            d_total = times.total - self.last.total
            d_busy = times.busy - self.last.busy
            util = min(1.0, max(0.0, d_busy / d_total)) if d_total > 0 else 0.0
            self.power_w = self.idle_w + (self.max_w - self.idle_w) * util
            self.energy_j += self.power_w * dt_s
        self.last = times
        self.last_mono_ns = mono_ns
        return self.energy_j, self.power_w


def default_estimate_watts(logical_cpus: int) -> tuple[float, float]:
    """Default (idle W, max W) for the CPU-time model when none is configured.

    Cloud Carbon Footprint's coefficients (AWS average over instance types, SPECpower based):
    0.74 W per vCPU at idle and 3.5 W per vCPU at full load.  Documented in docs/power.md;
    set ``JOULESTREAM_COLLECTOR_ESTIMATE_IDLE_W`` / ``..._MAX_W`` for a known machine.
    """
    n = max(1, logical_cpus)
    return IDLE_W_PER_VCPU * n, MAX_W_PER_VCPU * n


IDLE_W_PER_VCPU = 0.74
MAX_W_PER_VCPU = 3.5


@dataclass
class Batcher:
    """Collects samples and tells when a batch is due (by count or by age)."""

    max_samples: int
    max_age_ns: int
    items: list[object] = field(default_factory=list)
    first_ns: int | None = None

    def add(self, item: object, mono_ns: int) -> None:
        if not self.items:
            self.first_ns = mono_ns
        self.items.append(item)

    def due(self, mono_ns: int) -> bool:
        if not self.items:
            return False
        assert self.first_ns is not None
        return len(self.items) >= self.max_samples or mono_ns - self.first_ns >= self.max_age_ns

    def take(self) -> list[object]:
        out, self.items, self.first_ns = self.items, [], None
        return out
