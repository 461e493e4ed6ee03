"""The join of power with scenarios — pure, no I/O, the clock is an argument.

Energy over [a, b] is read off cumulative counters: the host's total counter (sum of its
non-overlapping zones) interpolated linearly at b minus at a.  A window is emitted when
samples cover its end (watermark) or, after a timeout, with its coverage and largest gap
stated — never as a silent zero.

Per host, samples are kept per collector run (``run_id``; counters restart with a run) and
per *stream* (the set of zones a collector publishes): a RAPL collector and a smart-plug
collector on one host are separate streams and are never added together.

Dynamic energy is energy above the host's idle power, taken from the latest complete
idle-baseline window of the same stream that ended at or before the scenario started (so
the result does not depend on processing order).  Baselines survive restarts through the
``host.baselines`` topic (see ``baseline_record`` / ``load_baselines``).

Concurrent scenarios on one host share its dynamic energy by CPU time (Kepler's approach):
the union of their windows is cut at every start and end; in each segment the host's
dynamic energy (floored at zero) is split in proportion to each active scenario's CPU rate
(``cpu_s / wall_s``, assumed uniform over its window).  The attributed shares of the
scenarios active in a segment add up exactly to that segment's dynamic energy.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.host_baselines import Baseline, HostBaselines
from schemas.power_samples import PowerSamples, Zone
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import ScenarioFailed, ScenarioFinished, ScenarioStarted

Stream = tuple[tuple[str, str], ...]


def stream_key(zones: Iterable[Zone]) -> Stream:
    """Identity of a stream: its (zone name, source) pairs, sorted."""
    return tuple(sorted((z.name, z.source) for z in zones))


def stream_text(stream: Stream) -> str:
    return ",".join(f"{n}@{s}" for n, s in stream)


class Series:
    """Samples of one collector run: times (ns) and cumulative joules per zone.

    Samples normally arrive in time order; ``add`` appends them (the fast path) and falls
    back to a sorted insert for late or out-of-order ones.  A sample at an instant already
    held is a duplicate (a replay) and is ignored.
    """

    __slots__ = ("_in_total", "_names", "_offsets_sorted", "ambiguous_ts", "basis", "offsets",
                 "per_zone", "run_id", "scope", "stream", "total", "ts", "zones")

    def __init__(self, run_id: str, zones: tuple[Zone, ...]) -> None:
        self.run_id = run_id
        self.zones = zones
        self.ts: list[int] = []
        self.total: list[float] = []  # sum over in_total zones
        self.per_zone: dict[str, list[float]] = {z.name: [] for z in zones}
        self.offsets: list[int] = []  # source message offset per sample
        self.ambiguous_ts: list[int] = []
        self._offsets_sorted = True
        self._names = tuple(z.name for z in zones)
        self._in_total = tuple(z.name for z in zones if z.in_total)
        self.stream: Stream = stream_key(zones)
        self.basis = ("estimated" if any(z.basis == "estimated" for z in zones if z.in_total)
                      else "measured")
        self.scope = "wall" if any(z.scope == "wall" for z in zones if z.in_total) else "component"

    def add(self, ts_ns: int, energy: dict[str, float], offset: int, ambiguous: bool) -> None:
        """Insert one sample (joules per zone name, cumulative)."""
        ts = self.ts
        nan = float("nan")
        get = energy.get
        tot = 0.0
        for n in self._in_total:
            tot += get(n, 0.0)
        if not ts or ts_ns > ts[-1]:  # in order: append
            ts.append(ts_ns)
            self.total.append(tot)
            offs = self.offsets
            if offs and offset < offs[-1]:
                self._offsets_sorted = False
            offs.append(offset)
            for n in self._names:
                self.per_zone[n].append(get(n, nan))
            if ambiguous:
                bisect.insort(self.ambiguous_ts, ts_ns)
            return
        i = bisect.bisect_left(ts, ts_ns)
        if i < len(ts) and ts[i] == ts_ns:
            return  # duplicate (replay)
        ts.insert(i, ts_ns)
        self.total.insert(i, tot)
        self.offsets.insert(i, offset)
        self._offsets_sorted = False
        for n in self._names:
            self.per_zone[n].insert(i, get(n, nan))
        if ambiguous:
            bisect.insort(self.ambiguous_ts, ts_ns)

    def min_offset(self) -> int | None:
        if not self.offsets:
            return None
        if self._offsets_sorted:
            return self.offsets[0]
        return min(self.offsets)

    def value_at(self, values: list[float], t: int) -> float | None:
        """Counter linearly interpolated at t; None outside the sampled span."""
        ts = self.ts
        if not ts or t < ts[0] or t > ts[-1]:
            return None
        i = bisect.bisect_left(ts, t)
        if ts[i] == t:
            return values[i]
        t0, t1 = ts[i - 1], ts[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def energy_between(self, a: int, b: int) -> tuple[float, int]:
        """Total-counter energy over the part of [a, b] the samples cover: (J, covered ns)."""
        ts = self.ts
        if not ts or ts[-1] < a or ts[0] > b:
            return 0.0, 0
        lo, hi = max(a, ts[0]), min(b, ts[-1])
        if hi <= lo:
            return 0.0, 0
        va = self.value_at(self.total, lo)
        vb = self.value_at(self.total, hi)
        assert va is not None and vb is not None
        return max(0.0, vb - va), hi - lo

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
    ts = series.ts
    if not ts or ts[-1] < start or ts[0] > end:
        return None
    a, b = max(start, ts[0]), min(end, ts[-1])
    e_a = series.value_at(series.total, a)
    e_b = series.value_at(series.total, b)
    assert e_a is not None and e_b is not None
    zones: dict[str, float] = {}
    for z in series.zones:
        vals = series.per_zone[z.name]
        za, zb = series.value_at(vals, a), series.value_at(vals, b)
        if za is not None and zb is not None and za == za and zb == zb:  # not NaN
            zones[z.name] = max(0.0, zb - za)
    lo = bisect.bisect_left(ts, a)
    hi = bisect.bisect_right(ts, b)
    inside = ts[lo:hi]
    # gaps: between the window edges and the samples bracketing them, and between samples
    points = [start, *inside, end]
    bracket_lo = ts[lo - 1] if lo > 0 else None
    bracket_hi = ts[hi] if hi < len(ts) else None
    gaps = [q - p for p, q in itertools.pairwise(points)]
    if bracket_lo is not None and inside:
        gaps[0] = inside[0] - bracket_lo
    if bracket_hi is not None and inside:
        gaps[-1] = bracket_hi - inside[-1]
    if not inside:
        gaps = [(bracket_hi or end) - (bracket_lo or start)]
    # peak: highest interval power among intervals overlapping the window
    peak = None
    tot = series.total
    for i in range(max(1, lo), min(len(ts) - 1, hi) + 1):
        dt = ts[i] - ts[i - 1]
        if dt > 0:
            p = (tot[i] - tot[i - 1]) / (dt / 1e9)
            if peak is None or p > peak:
                peak = p
    amb = any(start <= t <= end for t in series.ambiguous_ts)
    return WindowEnergy(
        energy_j=max(0.0, e_b - e_a), zones_j=zones, covered_ns=b - a,
        max_gap_ns=max(gaps) if gaps else 0, n_samples=len(inside), peak_power_w=peak,
        ambiguous=amb,
    )


def group_energy(group: list[Series], a: int, b: int) -> float:
    """Energy of a stream (possibly several collector runs) over the covered part of [a, b]."""
    return sum(s.energy_between(a, b)[0] for s in group)


@dataclass(frozen=True)
class Occupant:
    """A scenario that held the host over [start_ns, end_ns] using ``cpu_s`` of CPU."""

    scenario_id: str
    start_ns: int
    end_ns: int
    cpu_s: float
    offset: int

    @property
    def cpu_rate(self) -> float:
        wall = (self.end_ns - self.start_ns) / 1e9
        return self.cpu_s / wall if wall > 0 else 0.0


def attribute_dynamic(
    target: str, occupants: list[Occupant], energy_of: Callable[[int, int], float],
    idle_power_w: float
) -> tuple[float, float]:
    """Dynamic energy of ``target`` over its window, shared by CPU rate with the occupants
    overlapping it.  ``energy_of(a, b)`` gives the host's energy (J) over [a, b] in ns.

    Returns (attributed joules, time-weighted mean CPU share of the target).  In each
    segment between consecutive starts/ends the host's dynamic energy
    ``max(0, E - idle_power_w * dt)`` is split in proportion to CPU rates (equally if every
    active scenario reports zero CPU), so the shares of a segment sum to its dynamic energy.
    """
    me = next(o for o in occupants if o.scenario_id == target)
    others = [o for o in occupants
              if o.scenario_id != target and o.start_ns < me.end_ns and o.end_ns > me.start_ns]
    cuts = {me.start_ns, me.end_ns}
    for o in others:
        cuts.update(t for t in (o.start_ns, o.end_ns) if me.start_ns < t < me.end_ns)
    edges = sorted(cuts)
    total = 0.0
    share_time = 0.0
    for a, b in itertools.pairwise(edges):
        active = [me, *(o for o in others if o.start_ns <= a and o.end_ns >= b)]
        rates = [o.cpu_rate for o in active]
        s = sum(rates)
        share = rates[0] / s if s > 0 else 1.0 / len(active)
        dyn = max(0.0, energy_of(a, b) - idle_power_w * (b - a) / 1e9)
        total += dyn * share
        share_time += share * (b - a)
    span = me.end_ns - me.start_ns
    return total, (share_time / span if span > 0 else 1.0)


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
    #: finished (and failed, with CPU time) non-idle scenarios kept for attribution
    occupants: dict[str, Occupant] = field(default_factory=dict)
    #: idle baselines, oldest first (at most ``JoinConfig.max_baselines``)
    baselines: list[Baseline] = field(default_factory=list)
    #: the latest event time read from this host's scenario events (None: none read yet)
    events_wm: int | None = None

    def idle_for(self, stream: str, start_ns: int) -> Baseline | None:
        """The latest baseline of ``stream`` whose window ended at or before ``start_ns``."""
        best = None
        for b in self.baselines:
            if b.stream == stream and b.end_ns <= start_ns and (
                    best is None or (b.end_ns, b.scenario_id) > (best.end_ns, best.scenario_id)):
                best = b
        return best


@dataclass
class JoinConfig:
    #: emit without full coverage this long after the scenario's end (wall clock)
    timeout_s: float = 30.0
    #: samples older than this behind the newest are dropped unless a scenario needs them
    grace_s: float = 120.0
    #: an open (started, not finished) scenario stops pinning samples after this long
    max_open_s: float = 6 * 3600.0
    #: idle baselines kept per host (all streams together)
    max_baselines: int = 16
    #: while the events topic is behind (or its progress is unknown), samples are kept up to
    #: this far behind the newest, so a backlog read topic by topic loses nothing
    max_retention_s: float = 600.0


class EnergyJoin:
    """State of the join for the hosts of the partitions this instance owns."""

    def __init__(self, cfg: JoinConfig | None = None) -> None:
        self.cfg = cfg or JoinConfig()
        self.hosts: dict[str, HostState] = {}
        self.pending: dict[str, Pending] = {}
        #: hosts whose baselines changed since ``take_baseline_updates``
        self._baselines_changed: set[str] = set()
        #: per partition: messages of scenario.events not yet read (None: unknown)
        self.events_lag: dict[int, int] | None = None

    @staticmethod
    def _event_seen(st: HostState, ts_ns: int) -> None:
        """A host publishes its own events in time order: its watermark is their maximum."""
        if st.events_wm is None or ts_ns > st.events_wm:
            st.events_wm = ts_ns

    def set_events_lag(self, lag: dict[int, int]) -> None:
        """How far behind the scenario.events partitions are (from the consumer)."""
        self.events_lag = dict(lag)

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
            s = st.series[msg.run_id] = Series(msg.run_id, tuple(msg.zones))
        add = s.add
        latest = st.latest_ts
        for smp in msg.samples:
            add(smp.ts_ns, smp.energy_j, offset, bool(smp.wrap_ambiguous))
            if smp.ts_ns > latest:
                latest = smp.ts_ns
        st.latest_ts = latest

    def add_started(self, ev: ScenarioStarted, partition: int, offset: int) -> None:
        st = self._host(ev.host, partition)
        self._event_seen(st, ev.start_ns)
        if ev.scenario_id not in st.occupants and ev.scenario_id not in self.pending:
            st.open_starts.setdefault(ev.scenario_id, (ev.start_ns, offset))

    def add_finished(self, ev: ScenarioFinished, partition: int, offset: int) -> None:
        st = self._host(ev.host, partition)
        self._event_seen(st, ev.end_ns)
        st.open_starts.pop(ev.scenario_id, None)
        if not ev.settings.is_idle:
            st.occupants.setdefault(ev.scenario_id, Occupant(
                ev.scenario_id, ev.start_ns, ev.end_ns, ev.cpu_s, offset))
        self.pending.setdefault(ev.scenario_id, Pending(ev, partition, offset))

    def add_failed(self, ev: ScenarioFailed | str, host: str | None = None,
                   partition: int = -1, offset: int = 0) -> None:
        """A failed scenario closes its window; with ``cpu_s`` it still shares the host."""
        if isinstance(ev, str):  # (scenario_id, host) form
            st = self.hosts.get(host or "")
            if st:
                st.open_starts.pop(ev, None)
            return
        st = self._host(ev.host, partition)
        self._event_seen(st, ev.end_ns)
        st.open_starts.pop(ev.scenario_id, None)
        if ev.cpu_s is not None and not ev.settings.is_idle:
            st.occupants.setdefault(ev.scenario_id, Occupant(
                ev.scenario_id, ev.start_ns, ev.end_ns, ev.cpu_s, offset))

    def add_baselines(self, rec: HostBaselines, partition: int) -> None:
        """Baselines read back from ``host.baselines`` (after a restart or a rebalance)."""
        st = self._host(rec.host, partition)
        known = {b.scenario_id for b in st.baselines}
        merged = st.baselines + [b for b in rec.baselines if b.scenario_id not in known]
        merged.sort(key=lambda b: (b.end_ns, b.scenario_id))
        st.baselines = merged[-self.cfg.max_baselines:]

    # ---- outputs ------------------------------------------------------------------------
    def _best_stream(self, st: HostState, start: int, end: int, scope: str | None = None
                     ) -> tuple[list[Series], list[WindowEnergy]] | None:
        """The stream that best covers [start, end]: most coverage, then measured over
        estimated, then component over wall (so figures stay comparable across hosts with
        and without a plug), then the stream's name — a deterministic choice.  ``scope``
        restricts the choice to one scope."""
        streams: dict[Stream, list[Series]] = {}
        for s in st.series.values():
            if scope is None or s.scope == scope:
                streams.setdefault(s.stream, []).append(s)
        best: tuple[tuple[int, int, int, str], list[Series], list[WindowEnergy]] | None = None
        for key in sorted(streams, key=stream_text):
            group = streams[key]
            parts = [w for s in group if (w := window_energy(s, start, end)) is not None]
            if not parts:
                continue
            covered = sum(w.covered_ns for w in parts)
            rank = (covered, 1 if group[0].basis == "measured" else 0,
                    1 if group[0].scope == "component" else 0, stream_text(key))
            if best is None or rank[:3] > best[0][:3]:
                best = (rank, group, parts)
        return None if best is None else (best[1], best[2])

    def _wall_energy(self, st: HostState, start: int, end: int) -> tuple[float, float] | None:
        """Energy at the wall (smart plug) over the window and its coverage, if measured."""
        wall = self._best_stream(st, start, end, scope="wall")
        if wall is None:
            return None
        _, parts = wall
        covered = sum(w.covered_ns for w in parts)
        return sum(w.energy_j for w in parts), min(1.0, covered / max(1, end - start))

    def compute(self, ev: ScenarioFinished, now_ns: int, by: str) -> ScenarioEnergy:
        """The energy record of one scenario from the state held now (pure in that state)."""
        st = self.hosts.get(ev.host) or HostState(partition=-1)
        start, end = ev.start_ns, ev.end_ns
        window = max(1, end - start)
        best = self._best_stream(st, start, end)
        idle_bl: Baseline | None = None
        attributed: float | None = None
        share: float | None = None
        n_conc = 0
        if best is None:
            energy = 0.0
            zones: dict[str, float] = {}
            coverage, max_gap, n, peak, amb = 0.0, window, 0, None, False
            basis, scope, sources = "estimated", "component", ["none"]
        else:
            group, parts = best
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
            if not ev.settings.is_idle:
                idle_bl = st.idle_for(stream_text(group[0].stream), start)
        wall = self._wall_energy(st, start, end) if scope != "wall" else None
        wall_s = (end - start) / 1e9
        mean_p = energy / wall_s if wall_s > 0 else 0.0
        complete = coverage >= 0.999 and best is not None
        idle = idle_bl.idle_power_w if idle_bl is not None else None
        dyn = max(0.0, energy - idle * wall_s) if (idle is not None and complete) else None
        if not ev.settings.is_idle:
            me = st.occupants.get(ev.scenario_id) or Occupant(
                ev.scenario_id, start, end, ev.cpu_s, 0)
            occ = [me, *(o for o in st.occupants.values() if o.scenario_id != ev.scenario_id
                         and o.start_ns < end and o.end_ns > start)]
            n_conc = len(occ) - 1
            if idle is not None and complete and best is not None:
                grp = best[0]
                attributed, share = attribute_dynamic(
                    ev.scenario_id, occ, lambda a, b: group_energy(grp, a, b), idle)
        return ScenarioEnergy(
            scenario_id=ev.scenario_id, host=ev.host, run_id=ev.run_id, settings=ev.settings,
            start_ns=start, end_ns=end, wall_s=wall_s, energy_j=energy, zones_j=zones,
            basis=basis, sources=sources, scope=scope, mean_power_w=mean_p,  # type: ignore[arg-type]
            peak_power_w=peak, idle_power_w=idle, dynamic_energy_j=dyn, cpu_s=ev.cpu_s,
            frames=ev.frames, output_bytes=ev.output_bytes, output_path=ev.output_path,
            reference_path=ev.reference_path, achieved_fps=ev.achieved_fps, hardware=ev.hardware,
            coverage=coverage, max_gap_s=max_gap / 1e9, complete=complete, n_samples=n,
            emitted_by=by, wrap_ambiguous=amb, computed_at_ns=None,  # type: ignore[arg-type]
            idle_baseline_id=idle_bl.scenario_id if idle_bl is not None else None,
            concurrent_scenarios=n_conc, attributed_dynamic_energy_j=attributed,
            cpu_share=share,
            wall_energy_j=wall[0] if wall is not None else None,
            wall_coverage=wall[1] if wall is not None else None,
        )

    def _blocked(self, st: HostState | None, ev: ScenarioFinished) -> bool:
        """An open scenario overlapping ``ev`` would change its attribution: wait for it."""
        if st is None or ev.settings.is_idle:
            return False
        return any(s < ev.end_ns for s, _ in st.open_starts.values())

    def ready(self, now_ns: int) -> list[ScenarioEnergy]:
        """Emit every pending scenario whose end is covered (and no overlapping scenario is
        still open), or whose timeout passed.  Scenarios are computed in order of their end,
        so an idle window is known before the scenarios after it."""
        out: list[ScenarioEnergy] = []
        timeout_ns = int(self.cfg.timeout_s * 1e9)
        order = sorted(self.pending.items(),
                       key=lambda kv: (kv[1].event.end_ns, kv[0]))
        for sid, p in order:
            st = self.hosts.get(p.event.host)
            covered = st is not None and st.latest_ts >= p.event.end_ns
            timed_out = now_ns - p.event.end_ns >= timeout_ns
            if (covered and not self._blocked(st, p.event)) or timed_out:
                res = self.compute(p.event, now_ns, "watermark" if covered else "timeout")
                if p.event.settings.is_idle and res.complete and res.wall_s > 0 and st:
                    self._add_baseline(p.event.host, st, res)
                out.append(res)
                del self.pending[sid]
        self._prune(now_ns)
        return out

    def _add_baseline(self, host: str, st: HostState, res: ScenarioEnergy) -> None:
        best = self._best_stream(st, res.start_ns, res.end_ns)
        if best is None:
            return
        b = Baseline(scenario_id=res.scenario_id, start_ns=res.start_ns, end_ns=res.end_ns,
                     idle_power_w=res.mean_power_w, stream=stream_text(best[0][0].stream),
                     basis=res.basis, scope=res.scope)
        if any(x.scenario_id == b.scenario_id for x in st.baselines):
            return
        st.baselines.append(b)
        st.baselines.sort(key=lambda x: (x.end_ns, x.scenario_id))
        del st.baselines[:-self.cfg.max_baselines]
        self._baselines_changed.add(host)

    def take_baseline_updates(self) -> list[HostBaselines]:
        """Records for ``host.baselines`` (key host) of every host whose baselines changed."""
        out = [HostBaselines(host=h, baselines=list(self.hosts[h].baselines))
               for h in sorted(self._baselines_changed) if h in self.hosts]
        self._baselines_changed.clear()
        return out

    def _sample_horizon(self, st: HostState, grace: int) -> int:
        """Samples before this time are no longer needed by events still to be read.

        The two input topics are read independently: after downtime a poll may return
        samples far ahead of the events of the same host.  So retention follows the host's
        *events* already read: samples are kept back to its latest event time minus
        ``grace`` (and at most ``max_retention_s`` behind the newest sample).  Only a host
        with no event read at all, whose events partition is known to be read to its end,
        is pruned by ``grace`` behind the newest sample alone (hosts that only publish
        power)."""
        horizon = st.latest_ts - grace
        cap = st.latest_ts - int(self.cfg.max_retention_s * 1e9)
        wm = st.events_wm
        if wm is not None:
            return max(cap, min(horizon, wm - grace))
        lag = None if self.events_lag is None else self.events_lag.get(st.partition)
        return horizon if lag == 0 else cap

    def _prune(self, now_ns: int) -> None:
        grace = int(self.cfg.grace_s * 1e9)
        max_open = int(self.cfg.max_open_s * 1e9)
        pending_starts: dict[str, int] = {}
        for p in self.pending.values():
            h = p.event.host
            pending_starts[h] = min(pending_starts.get(h, p.event.start_ns), p.event.start_ns)
        for host, st in self.hosts.items():
            for sid, (start, _) in list(st.open_starts.items()):
                if now_ns - start > max_open:
                    del st.open_starts[sid]
            horizon = self._sample_horizon(st, grace)
            for s, _ in st.open_starts.values():
                horizon = min(horizon, s)
            if host in pending_starts:
                horizon = min(horizon, pending_starts[host])
            # occupants that ended before the horizon can no longer overlap anything pending
            for sid in [k for k, o in st.occupants.items() if o.end_ns < horizon]:
                del st.occupants[sid]
            # samples of retained occupants stay, so a replay recomputes them identically
            for o in st.occupants.values():
                horizon = min(horizon, o.start_ns)
            for s in st.series.values():
                s.prune_before(horizon)

    # ---- offsets ------------------------------------------------------------------------
    def min_offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        """Lowest offset still needed per partition: (power.samples, scenario.events)."""
        samples: dict[int, int] = {}
        events: dict[int, int] = {}
        for st in self.hosts.values():
            for s in st.series.values():
                o = s.min_offset()
                if o is not None:
                    samples[st.partition] = min(samples.get(st.partition, o), o)
            for _, off in st.open_starts.values():
                events[st.partition] = min(events.get(st.partition, off), off)
            for occ in st.occupants.values():
                events[st.partition] = min(events.get(st.partition, occ.offset), occ.offset)
        for p in self.pending.values():
            events[p.partition] = min(events.get(p.partition, p.offset), p.offset)
        return samples, events

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        for h in [h for h, st in self.hosts.items() if st.partition in parts]:
            del self.hosts[h]
            self._baselines_changed.discard(h)
        for sid in [s for s, p in self.pending.items() if p.partition in parts]:
            del self.pending[sid]
