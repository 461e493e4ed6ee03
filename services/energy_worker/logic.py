"""The join of power with scenarios — pure, no I/O, the clock is an argument.

Energy over [a, b] is read off cumulative counters: the host's total counter (sum of its
non-overlapping zones) interpolated linearly at b minus at a.  A window is emitted when
samples cover its end (watermark) or, after a timeout, with its coverage and largest gap
stated — never as a silent zero.

Per host, samples are kept per collector run (``run_id``; counters restart with a run) and
per *stream* (the set of zones a collector publishes): a RAPL collector and a smart-plug
collector on one host are separate streams and are never added together.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.power_samples import PowerSamples, Zone
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import ScenarioFinished, ScenarioStarted


@dataclass
class Series:
    """Samples of one collector run: times (ns) and cumulative joules per zone."""

    run_id: str
    zones: tuple[Zone, ...]
    ts: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)  # sum over in_total zones
    per_zone: dict[str, list[float]] = field(default_factory=dict)
    offsets: list[int] = field(default_factory=list)  # source message offset per sample
    ambiguous_ts: list[int] = field(default_factory=list)

    @property
    def stream(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((z.name, z.source) for z in self.zones))

    @property
    def basis(self) -> str:
        return "estimated" if any(z.basis == "estimated" for z in self.zones if z.in_total) \
            else "measured"

    @property
    def scope(self) -> str:
        return "wall" if any(z.scope == "wall" for z in self.zones if z.in_total) else "component"

    def add(self, ts_ns: int, energy: dict[str, float], offset: int, ambiguous: bool) -> None:
        """Insert a sample; out-of-order samples are placed by time, duplicates ignored."""
        i = bisect.bisect_left(self.ts, ts_ns)
        if i < len(self.ts) and self.ts[i] == ts_ns:
            return  # duplicate (replay)
        tot = sum(energy.get(z.name, 0.0) for z in self.zones if z.in_total)
        self.ts.insert(i, ts_ns)
        self.total.insert(i, tot)
        self.offsets.insert(i, offset)
        for z in self.zones:
            self.per_zone.setdefault(z.name, []).insert(i, energy.get(z.name, float("nan")))
        if ambiguous:
            bisect.insort(self.ambiguous_ts, ts_ns)

    def value_at(self, values: list[float], t: int) -> float | None:
        """Counter linearly interpolated at t; None outside the sampled span."""
        if not self.ts or t < self.ts[0] or t > self.ts[-1]:
            return None
        i = bisect.bisect_left(self.ts, t)
        if self.ts[i] == t:
            return values[i]
        t0, t1 = self.ts[i - 1], self.ts[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def prune_before(self, horizon_ns: int) -> None:
        """Drop samples not needed for windows starting at or after ``horizon_ns`` (the last
        sample at or before the horizon is kept to interpolate there)."""
        i = bisect.bisect_right(self.ts, horizon_ns) - 1
        if i <= 0:
            return
        del self.ts[:i], self.total[:i], self.offsets[:i]
        for v in self.per_zone.values():
            del v[:i]
        j = bisect.bisect_left(self.ambiguous_ts, self.ts[0])
        del self.ambiguous_ts[:j]


@dataclass
class WindowEnergy:
    energy_j: float
    zones_j: dict[str, float]
    covered_ns: int
    max_gap_ns: int
    n_samples: int
    peak_power_w: float | None
    ambiguous: bool


def window_energy(series: Series, start: int, end: int) -> WindowEnergy | None:
    """Energy of one series over [start, end] (the part of it that samples cover)."""
    if not series.ts or series.ts[-1] < start or series.ts[0] > end:
        return None
    a, b = max(start, series.ts[0]), min(end, series.ts[-1])
    e_a = series.value_at(series.total, a)
    e_b = series.value_at(series.total, b)
    assert e_a is not None and e_b is not None
    zones: dict[str, float] = {}
    for z in series.zones:
        vals = series.per_zone[z.name]
        za, zb = series.value_at(vals, a), series.value_at(vals, b)
        if za is not None and zb is not None and za == za and zb == zb:  # not NaN
            zones[z.name] = max(0.0, zb - za)
    lo = bisect.bisect_left(series.ts, a)
    hi = bisect.bisect_right(series.ts, b)
    inside = series.ts[lo:hi]
    # gaps: between the window edges and the samples bracketing them, and between samples
    points = [start, *inside, end]
    bracket_lo = series.ts[lo - 1] if lo > 0 else None
    bracket_hi = series.ts[hi] if hi < len(series.ts) else None
    gaps = [q - p for p, q in zip(points, points[1:], strict=False)]
    if bracket_lo is not None and inside:
        gaps[0] = inside[0] - bracket_lo
    if bracket_hi is not None and inside:
        gaps[-1] = bracket_hi - inside[-1]
    if not inside:
        gaps = [(bracket_hi or end) - (bracket_lo or start)]
    # peak: highest interval power among intervals overlapping the window
    peak = None
    i0 = max(1, lo)
    i1 = min(len(series.ts) - 1, hi)
    for i in range(i0, i1 + 1):
        dt = series.ts[i] - series.ts[i - 1]
        if dt > 0:
            p = (series.total[i] - series.total[i - 1]) / (dt / 1e9)
            peak = p if peak is None else max(peak, p)
    amb = any(start <= t <= end for t in series.ambiguous_ts)
    return WindowEnergy(
        energy_j=max(0.0, e_b - e_a), zones_j=zones, covered_ns=b - a,
        max_gap_ns=max(gaps) if gaps else 0, n_samples=len(inside), peak_power_w=peak,
        ambiguous=amb,
    )


@dataclass
class Pending:
    event: ScenarioFinished
    partition: int
    offset: int


@dataclass
class HostState:
    partition: int
    series: dict[str, Series] = field(default_factory=dict)  # run_id → series
    latest_ts: int = 0
    open_starts: dict[str, tuple[int, int]] = field(default_factory=dict)  # id → (start, offset)
    idle_power_w: float | None = None


@dataclass
class JoinConfig:
    #: emit without full coverage this long after the scenario's end (wall clock)
    timeout_s: float = 30.0
    #: samples older than this behind the newest are dropped unless an open scenario needs them
    grace_s: float = 120.0
    #: an open (started, not finished) scenario stops pinning samples after this long
    max_open_s: float = 6 * 3600.0


class EnergyJoin:
    """State of the join for the hosts of the partitions this instance owns."""

    def __init__(self, cfg: JoinConfig | None = None) -> None:
        self.cfg = cfg or JoinConfig()
        self.hosts: dict[str, HostState] = {}
        self.pending: dict[str, Pending] = {}

    # ---- inputs -------------------------------------------------------------------------
    def _host(self, host: str, partition: int) -> HostState:
        st = self.hosts.get(host)
        if st is None:
            st = self.hosts[host] = HostState(partition=partition)
        return st

    def add_samples(self, msg: PowerSamples, partition: int, offset: int) -> None:
        st = self._host(msg.host, partition)
        s = st.series.get(msg.run_id)
        if s is None:
            s = st.series[msg.run_id] = Series(run_id=msg.run_id, zones=tuple(msg.zones))
        for smp in msg.samples:
            s.add(smp.ts_ns, smp.energy_j, offset, bool(smp.wrap_ambiguous))
            st.latest_ts = max(st.latest_ts, smp.ts_ns)

    def add_started(self, ev: ScenarioStarted, partition: int, offset: int) -> None:
        st = self._host(ev.host, partition)
        st.open_starts.setdefault(ev.scenario_id, (ev.start_ns, offset))

    def add_finished(self, ev: ScenarioFinished, partition: int, offset: int) -> None:
        st = self._host(ev.host, partition)
        st.open_starts.pop(ev.scenario_id, None)
        self.pending.setdefault(ev.scenario_id, Pending(ev, partition, offset))

    def add_failed(self, scenario_id: str, host: str) -> None:
        st = self.hosts.get(host)
        if st:
            st.open_starts.pop(scenario_id, None)

    # ---- outputs ------------------------------------------------------------------------
    def compute(self, ev: ScenarioFinished, now_ns: int, by: str) -> ScenarioEnergy:
        st = self.hosts.get(ev.host) or HostState(partition=-1)
        start, end = ev.start_ns, ev.end_ns
        window = max(1, end - start)
        # group the host's series by stream; a stream may span several collector runs
        streams: dict[tuple[tuple[str, str], ...], list[Series]] = {}
        for s in st.series.values():
            streams.setdefault(s.stream, []).append(s)
        best: tuple[tuple[float, int], list[Series], list[WindowEnergy]] | None = None
        for group in streams.values():
            parts = [w for s in group if (w := window_energy(s, start, end)) is not None]
            if not parts:
                continue
            covered = sum(w.covered_ns for w in parts)
            rank = (covered, 1 if group[0].basis == "measured" else 0)
            if best is None or rank > best[0]:
                best = (rank, group, parts)
        if best is None:
            energy = 0.0
            zones: dict[str, float] = {}
            coverage, max_gap, n, peak, amb = 0.0, window, 0, None, False
            basis, scope, sources = "estimated", "component", ["none"]
        else:
            _, group, parts = best
            energy = sum(w.energy_j for w in parts)
            zones = {}
            for w in parts:
                for k, v in w.zones_j.items():
                    zones[k] = zones.get(k, 0.0) + v
            covered = sum(w.covered_ns for w in parts)
            coverage = min(1.0, covered / window) if end > start else 1.0
            max_gap = max(w.max_gap_ns for w in parts)
            if covered < window and len(parts) > 1:
                max_gap = max(max_gap, window - covered)
            n = sum(w.n_samples for w in parts)
            peaks = [w.peak_power_w for w in parts if w.peak_power_w is not None]
            peak = max(peaks) if peaks else None
            amb = any(w.ambiguous for w in parts)
            basis, scope = group[0].basis, group[0].scope
            sources = sorted({z.source for z in group[0].zones if z.in_total})
        wall_s = (end - start) / 1e9
        mean_p = energy / wall_s if wall_s > 0 else 0.0
        complete = coverage >= 0.999 and best is not None
        idle = st.idle_power_w
        dyn = max(0.0, energy - idle * wall_s) if (idle is not None and complete) else None
        return ScenarioEnergy(
            scenario_id=ev.scenario_id, host=ev.host, run_id=ev.run_id, settings=ev.settings,
            start_ns=start, end_ns=end, wall_s=wall_s, energy_j=energy, zones_j=zones,
            basis=basis, sources=sources, scope=scope, mean_power_w=mean_p,  # type: ignore[arg-type]
            peak_power_w=peak, idle_power_w=idle, dynamic_energy_j=dyn, cpu_s=ev.cpu_s,
            frames=ev.frames, output_bytes=ev.output_bytes, output_path=ev.output_path,
            reference_path=ev.reference_path, achieved_fps=ev.achieved_fps, hardware=ev.hardware,
            coverage=coverage, max_gap_s=max_gap / 1e9, complete=complete, n_samples=n,
            emitted_by=by, wrap_ambiguous=amb, computed_at_ns=None,  # type: ignore[arg-type]
        )

    def ready(self, now_ns: int) -> list[ScenarioEnergy]:
        """Emit every pending scenario whose end is covered, or whose timeout passed."""
        out: list[ScenarioEnergy] = []
        timeout_ns = int(self.cfg.timeout_s * 1e9)
        for sid, p in list(self.pending.items()):
            st = self.hosts.get(p.event.host)
            covered = st is not None and st.latest_ts >= p.event.end_ns
            if covered or now_ns - p.event.end_ns >= timeout_ns:
                res = self.compute(p.event, now_ns, "watermark" if covered else "timeout")
                if p.event.settings.is_idle and res.complete and res.wall_s > 0 and st:
                    st.idle_power_w = res.mean_power_w
                out.append(res)
                del self.pending[sid]
        self._prune(now_ns)
        return out

    def _prune(self, now_ns: int) -> None:
        grace = int(self.cfg.grace_s * 1e9)
        max_open = int(self.cfg.max_open_s * 1e9)
        for host, st in self.hosts.items():
            for sid, (start, _) in list(st.open_starts.items()):
                if now_ns - start > max_open:
                    del st.open_starts[sid]
            horizon = st.latest_ts - grace
            needs = [s for s, _ in st.open_starts.values()]
            needs += [p.event.start_ns for p in self.pending.values() if p.event.host == host]
            if needs:
                horizon = min(horizon, *needs)
            for s in st.series.values():
                s.prune_before(horizon)

    # ---- offsets ------------------------------------------------------------------------
    def min_offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        """Lowest offset still needed per partition: (power.samples, scenario.events)."""
        samples: dict[int, int] = {}
        events: dict[int, int] = {}
        for st in self.hosts.values():
            for s in st.series.values():
                if s.offsets:
                    o = min(s.offsets)
                    samples[st.partition] = min(samples.get(st.partition, o), o)
            for _, off in st.open_starts.values():
                events[st.partition] = min(events.get(st.partition, off), off)
        for p in self.pending.values():
            events[p.partition] = min(events.get(p.partition, p.offset), p.offset)
        return samples, events

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        for h in [h for h, st in self.hosts.items() if st.partition in parts]:
            del self.hosts[h]
        for sid in [s for s, p in self.pending.items() if p.partition in parts]:
            del self.pending[sid]
