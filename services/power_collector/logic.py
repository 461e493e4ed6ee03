"""Pure parts of the power collector: counter wrap correction and the CPU-time estimate.

No I/O here: readings come in as plain numbers, with the clock as an argument.
"""

from __future__ import annotations

import contextlib
import json
import math
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


@dataclass
class PowerIntegrator:
    """Cumulative joules from instantaneous power readings (trapezoid rule).

    Used where a device has no energy counter (older NVIDIA GPUs, plugs that report only
    watts).  The first reading starts the integral at zero; a reading at the same or an
    earlier monotonic time adds nothing.
    """

    energy_j: float = 0.0
    last_power_w: float | None = None
    last_mono_ns: int | None = None

    def update(self, power_w: float, mono_ns: int) -> float:
        if self.last_power_w is not None and self.last_mono_ns is not None:
            dt_s = (mono_ns - self.last_mono_ns) / 1e9
            if dt_s > 0:
                self.energy_j += 0.5 * (self.last_power_w + power_w) * dt_s
        self.last_power_w = power_w
        self.last_mono_ns = mono_ns
        return self.energy_j


@dataclass
class ResettableCounter:
    """Cumulative joules from a device's monotonic energy counter that may restart at zero
    (NVML's total-energy counter restarts when the driver reloads; a plug's ``Total`` when
    it is reset).  A decrease is taken as a restart: the new value is energy since then."""

    energy_j: float = 0.0
    last_raw_j: float | None = None
    resets: int = 0

    def update(self, raw_j: float) -> float:
        if self.last_raw_j is not None:
            if raw_j >= self.last_raw_j:
                self.energy_j += raw_j - self.last_raw_j
            else:
                self.energy_j += raw_j
                self.resets += 1
        self.last_raw_j = raw_j
        return self.energy_j


# ---- smart plugs -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlugReading:
    """One plug report: power in W and, when the plug has one, its energy counter in J."""

    power_w: float | None
    total_j: float | None


class PlugPayloadError(ValueError):
    """A plug message that is not in the configured form (it is skipped and counted)."""


ENERGY_UNITS_J = {"J": 1.0, "Wh": 3600.0, "kWh": 3_600_000.0}


def _number(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PlugPayloadError(f"{what} is not a number: {v!r}")
    f = float(v)
    if not math.isfinite(f) or f < 0:
        raise PlugPayloadError(f"{what} must be finite and >= 0, got {f}")
    return f


def _path(doc: object, path: str) -> object:
    """Follow a dotted path (``ENERGY.Power``, ``params.switch:0.apower``) through dicts;
    a numeric segment also indexes a list (Tasmota reports per-channel power as a list)."""
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


def _json(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise PlugPayloadError(f"not JSON: {e}") from e


def parse_tasmota(payload: bytes) -> PlugReading:
    """Tasmota ``tele/<device>/SENSOR``: ``{"ENERGY": {"Total": kWh, "Power": W, ...}}``.

    ``Total`` is the plug's own kWh counter (resolution set by Tasmota's ``EnergyRes``,
    3 decimals = 1 Wh by default).  Messages without ENERGY (other sensors) are rejected."""
    doc = _json(payload)
    try:
        energy = _path(doc, "ENERGY")
    except KeyError as e:
        raise PlugPayloadError("no ENERGY object (not a power-monitoring plug message)") from e
    if not isinstance(energy, dict):
        raise PlugPayloadError("ENERGY is not an object")
    power = energy.get("Power")
    if isinstance(power, list):  # multi-channel devices report one value per channel
        power = sum(_number(p, "ENERGY.Power[]") for p in power)
    p = _number(power, "ENERGY.Power") if power is not None else None
    total = energy.get("Total")
    t = _number(total, "ENERGY.Total") * ENERGY_UNITS_J["kWh"] if total is not None else None
    if p is None and t is None:
        raise PlugPayloadError("ENERGY has neither Power nor Total")
    return PlugReading(p, t)


def parse_shelly(payload: bytes, component: str = "switch:0") -> PlugReading | None:
    """Shelly Gen2/Gen3 RPC notification on ``<prefix>/events/rpc``.

    ``NotifyStatus`` carries changed fields only: ``params.<component>.apower`` (W) and/or
    ``params.<component>.aenergy.total`` (Wh).  Returns None for notifications about other
    components or methods (e.g. NotifyEvent), which are not errors."""
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise PlugPayloadError("not a JSON object")
    if doc.get("method") not in ("NotifyStatus", "NotifyFullStatus"):
        return None
    params = doc.get("params")
    comp = params.get(component) if isinstance(params, dict) else None
    if not isinstance(comp, dict):
        return None
    p = _number(comp["apower"], "apower") if "apower" in comp else None
    t = None
    aenergy = comp.get("aenergy")
    if isinstance(aenergy, dict) and "total" in aenergy:
        t = _number(aenergy["total"], "aenergy.total") * ENERGY_UNITS_J["Wh"]
    if p is None and t is None:
        return None
    return PlugReading(p, t)


def parse_generic(payload: bytes, power_path: str | None, energy_path: str | None,
                  energy_unit: str = "Wh") -> PlugReading:
    """Any JSON plug: the configured dotted paths to power (W) and energy (``energy_unit``)."""
    doc = _json(payload)
    p = t = None
    if power_path:
        with contextlib.suppress(KeyError):
            p = _number(_path(doc, power_path), power_path)
    if energy_path:
        with contextlib.suppress(KeyError):
            t = _number(_path(doc, energy_path), energy_path) * ENERGY_UNITS_J[energy_unit]
    if p is None and t is None:
        raise PlugPayloadError(f"neither {power_path!r} nor {energy_path!r} in the message")
    return PlugReading(p, t)


@dataclass
class PlugMeter:
    """Cumulative wall joules from a plug's reports, disciplined by the plug's own counter.

    The plug's energy counter is preferred: it integrates far more often than the plug
    reports.  Each report carrying the counter anchors the cumulative value to
    ``anchor + counter difference`` (a counter that goes backwards is a plug reset: the new
    value is energy since then).  Between counter reports, or on plugs without a counter,
    power is integrated (trapezoid; a report without power keeps the last power, as Shelly
    sends changed fields only).  The output never decreases: if integrated power ran ahead
    of the counter, the value holds until the counter catches up.  ``prefer_counter=False``
    ignores the counter (for plugs whose counter is too coarse, e.g. Tasmota ``EnergyRes 3``
    = 1 Wh steps).
    """

    prefer_counter: bool = True
    energy_j: float = 0.0
    anchor_j: float = 0.0  # the cumulative value the last counter reading stands for
    last_total_j: float | None = None
    last_power_w: float | None = None
    last_mono_ns: int | None = None
    counter_updates: int = 0
    power_intervals: int = 0
    resets: int = 0

    def update(self, r: PlugReading, mono_ns: int) -> tuple[float, float | None]:
        """Feed one report (monotonic receive time); returns (cumulative J, mean power over
        the interval since the previous report, or None on the first)."""
        last_ns = self.last_mono_ns
        if last_ns is not None and mono_ns <= last_ns:
            return self.energy_j, None  # out of order or duplicate: ignored
        before = self.energy_j
        total = r.total_j if self.prefer_counter else None
        dt_s = (mono_ns - last_ns) / 1e9 if last_ns is not None else 0.0
        if total is not None and self.last_total_j is not None:
            if total >= self.last_total_j:
                self.anchor_j += total - self.last_total_j
            else:
                self.anchor_j += total
                self.resets += 1
            self.energy_j = max(self.energy_j, self.anchor_j)
            self.counter_updates += 1
        elif last_ns is not None and (r.power_w is not None or self.last_power_w is not None):
            p0 = self.last_power_w if self.last_power_w is not None else r.power_w
            p1 = r.power_w if r.power_w is not None else self.last_power_w
            assert p0 is not None and p1 is not None
            self.energy_j += 0.5 * (p0 + p1) * dt_s
            self.power_intervals += 1
        if total is not None:
            if self.last_total_j is None:
                self.anchor_j = self.energy_j
            self.last_total_j = total
        if r.power_w is not None:
            self.last_power_w = r.power_w
        self.last_mono_ns = mono_ns
        return self.energy_j, ((self.energy_j - before) / dt_s if dt_s > 0 else None)
