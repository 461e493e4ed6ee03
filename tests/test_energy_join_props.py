"""The join under late, out-of-order and duplicated input; energy conservation (hypothesis);
CPU-share attribution of concurrent scenarios; idempotency; baselines that survive restarts."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.host_baselines import Baseline, HostBaselines
from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import (
    EncodeSettings,
    ScenarioFailed,
    ScenarioFinished,
    ScenarioStarted,
)
from services.energy_worker.logic import EnergyJoin, JoinConfig, Series

S = 10**9
T0 = 1_790_000_000 * S
PKG = Zone(name="package-0", kind="package", source="rapl", basis="measured", scope="component")
PLUG = Zone(name="plug:p1", kind="wall", source="mqtt_plug", basis="measured", scope="wall")


def p_w(t: float) -> float:
    """A smooth, non-trivial power profile (W): 30 W base plus a slow wave."""
    return 30.0 + 10.0 * math.sin(t / 3.0)


def e_j(t: float) -> float:
    """Exact integral of p_w from 0 to t."""
    return 30.0 * t + 30.0 * (1 - math.cos(t / 3.0))


def batch(ts: list[float], zone: Zone = PKG, run: str = "r1", host: str = "h1",
          scale: float = 1.0) -> PowerSamples:
    smp = [Sample(seq=round(t * S), ts_ns=T0 + round(t * S), mono_ns=round(t * S),
                  energy_j={zone.name: scale * e_j(t)}) for t in sorted(set(ts))]
    return PowerSamples(host=host, run_id=run, zones=[zone], samples=smp)


def fin(sid: str, a: float, b: float, cpu_s: float = 1.0, codec: str = "libx264",
        host: str = "h1") -> ScenarioFinished:
    return ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host=host,
                            settings=EncodeSettings(codec=codec, duration_s=b - a),
                            start_ns=T0 + round(a * S), end_ns=T0 + round(b * S), frames=1,
                            cpu_s=cpu_s)


def started(sid: str, a: float) -> ScenarioStarted:
    return ScenarioStarted(event_id=f"{sid}:started", scenario_id=sid, host="h1",
                           settings=EncodeSettings(codec="libx264"), start_ns=T0 + round(a * S))


def grid(a: float, b: float, dt: float) -> list[float]:
    return [round(a + i * dt, 6) for i in range(round((b - a) / dt) + 1)]


def one(j: EnergyJoin, now_s: float) -> ScenarioEnergy:
    (res,) = j.ready(T0 + round(now_s * S))
    return res


# ---- late and out-of-order samples -------------------------------------------------------

def test_late_samples_after_the_finished_event_are_waited_for() -> None:
    j = EnergyJoin(JoinConfig(timeout_s=60))
    j.add_samples(batch(grid(0, 10, 0.1)), 0, 0)
    j.add_finished(fin("s", 2, 14), 0, 0)  # the event arrives before its samples
    assert j.ready(T0 + 15 * S) == []
    j.add_samples(batch(grid(10.1, 20, 0.1)), 0, 1)  # late samples
    res = one(j, 16)
    assert res.emitted_by == "watermark" and res.complete
    # linear interpolation of a smooth counter at 0.1 s: error far below 0.01 %
    assert res.energy_j == pytest.approx(e_j(14) - e_j(2), rel=1e-4)


def test_reversed_batches_give_the_same_record_as_in_order() -> None:
    pieces = [grid(k, k + 2.9, 0.1) for k in range(0, 30, 3)]
    a, b = EnergyJoin(), EnergyJoin()
    for i, p in enumerate(pieces):
        a.add_samples(batch(p), 0, i)
    for i, p in reversed(list(enumerate(pieces))):
        b.add_samples(batch(p), 0, i)
    for j in (a, b):
        j.add_finished(fin("s", 4.05, 25.55), 0, 0)
    ra, rb = one(a, 40), one(b, 40)
    assert ra == rb
    assert ra.energy_j == pytest.approx(e_j(25.55) - e_j(4.05), rel=1e-4)


def test_samples_arriving_after_emission_do_not_change_pruning_safety() -> None:
    """A sample older than the grace window still lands in order (no crash, no loss)."""
    j = EnergyJoin(JoinConfig(grace_s=1))
    j.add_samples(batch(grid(0, 10, 0.5)), 0, 0)
    j.ready(T0 + 10 * S)
    j.add_samples(batch([9.75]), 0, 1)
    s = j.hosts["h1"].series["r1"]
    assert s.ts == sorted(s.ts) and T0 + round(9.75 * S) in s.ts


# ---- properties ---------------------------------------------------------------------------

times = st.lists(st.integers(min_value=0, max_value=60_000).map(lambda ms: ms / 1000),
                 min_size=2, max_size=80, unique=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ts=times, a=st.floats(0, 60), b=st.floats(0, 60), c=st.floats(0, 1))
def test_splitting_a_window_conserves_energy(ts: list[float], a: float, b: float,
                                              c: float) -> None:
    """E[a, b] == E[a, m] + E[m, b] for any split m, whatever the sample times."""
    lo, hi = sorted((a, b))
    ts = sorted(set(ts) | {0.0, 60.0})  # samples cover the windows
    m = lo + c * (hi - lo)
    j = EnergyJoin()
    j.add_samples(batch(ts), 0, 0)
    for sid, x, y in (("whole", lo, hi), ("left", lo, m), ("right", m, hi)):
        j.add_finished(fin(sid, x, y), 0, 0)
    res = {r.scenario_id: r for r in j.ready(T0 + 61 * S)}
    assert res["whole"].energy_j == pytest.approx(
        res["left"].energy_j + res["right"].energy_j, rel=1e-9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(ts=times, dup=st.lists(st.integers(0, 79), max_size=30), order=st.randoms())
def test_duplicates_and_order_change_nothing(ts: list[float], dup: list[int],
                                             order: object) -> None:
    ts = sorted(set(ts) | {0.0, 60.0})
    clean = EnergyJoin()
    clean.add_samples(batch(ts), 0, 0)
    noisy = EnergyJoin()
    chunks = [ts[i:i + 5] for i in range(0, len(ts), 5)]
    chunks += [[ts[i % len(ts)]] for i in dup]  # replayed samples
    order.shuffle(chunks)  # type: ignore[attr-defined]
    for k, ch in enumerate(chunks):
        noisy.add_samples(batch(ch), 0, k)
    for j in (clean, noisy):
        j.add_finished(fin("s", 3.3, 47.7), 0, 0)
        j.add_finished(fin("s", 3.3, 47.7), 0, 0)  # duplicated event
    ra = clean.ready(T0 + 61 * S)
    rb = noisy.ready(T0 + 61 * S)
    assert len(ra) == len(rb) == 1
    assert ra[0] == rb[0]


def test_series_fast_path_matches_sorted_insert() -> None:
    fast, slow = Series("r", (PKG,)), Series("r", (PKG,))
    ts = grid(0, 5, 0.01)
    for i, t in enumerate(ts):
        fast.add(T0 + round(t * S), {"package-0": e_j(t)}, i, False)
    for i, t in reversed(list(enumerate(ts))):
        slow.add(T0 + round(t * S), {"package-0": e_j(t)}, i, False)
    assert fast.ts == slow.ts and fast.total == slow.total
    assert fast.min_offset() == slow.min_offset() == 0


# ---- streams are never added together ----------------------------------------------------

def test_wall_plug_stream_is_never_added_to_rapl() -> None:
    j = EnergyJoin()
    j.add_samples(batch(grid(0, 20, 0.1)), 0, 0)
    j.add_samples(batch(grid(0, 20, 1.0), zone=PLUG, run="plug", scale=2.0), 0, 1)
    j.add_finished(fin("s", 5, 15), 0, 0)
    res = one(j, 21)
    assert res.sources == ["rapl"] and res.scope == "component"
    assert res.energy_j == pytest.approx(e_j(15) - e_j(5), rel=1e-4)


# ---- idle baseline, dynamic energy, attribution -------------------------------------------

def flat(a: float, b: float, dt: float, watts: float) -> PowerSamples:
    smp = [Sample(seq=i, ts_ns=T0 + round(t * S), mono_ns=round(t * S),
                  energy_j={"package-0": watts * t}) for i, t in enumerate(grid(a, b, dt))]
    return PowerSamples(host="h1", run_id="flat", zones=[PKG], samples=smp)


def test_concurrent_scenarios_share_dynamic_energy_by_cpu_time_and_conserve_it() -> None:
    """Idle 10 W, host at 50 W from t=10 s.  A [10, 30] s, B [15, 25] s, C [20, 40] s overlap;
    the attributed shares add up to the host's dynamic energy over the union exactly."""
    j = EnergyJoin()
    smp = [Sample(seq=i, ts_ns=T0 + round(t * S), mono_ns=0,
                  energy_j={"package-0": 10 * min(t, 10) + 50 * max(0.0, t - 10)})
           for i, t in enumerate(grid(0, 45, 0.5))]
    j.add_samples(PowerSamples(host="h1", run_id="r", zones=[PKG], samples=smp), 0, 0)
    j.add_finished(fin("idle", 0, 9, codec="idle", cpu_s=0), 0, 0)
    j.add_finished(fin("A", 10, 30, cpu_s=20), 0, 1)   # 1 CPU
    j.add_finished(fin("B", 15, 25, cpu_s=30), 0, 2)   # 3 CPUs
    j.add_finished(fin("C", 20, 40, cpu_s=20), 0, 3)   # 1 CPU
    res = {r.scenario_id: r for r in j.ready(T0 + 50 * S)}
    assert res["idle"].mean_power_w == pytest.approx(10.0)
    dyn_union = 40.0 * 30  # 40 W above idle over [10, 40]
    total = sum(res[k].attributed_dynamic_energy_j or 0 for k in "ABC")
    assert total == pytest.approx(dyn_union, rel=1e-9)
    # by hand: A alone [10,15] 200 J; A+B [15,20] 1/4 of 200; A+B+C [20,25] 1/5;
    # A+C [25,30] 1/2; C alone [30,40] 400 J
    assert res["A"].attributed_dynamic_energy_j == pytest.approx(200 + 50 + 40 + 100)
    assert res["B"].attributed_dynamic_energy_j == pytest.approx(150 + 120)
    assert res["C"].attributed_dynamic_energy_j == pytest.approx(40 + 100 + 400)
    assert res["A"].concurrent_scenarios == 2 and res["B"].concurrent_scenarios == 2
    assert res["A"].idle_baseline_id == "idle" and res["A"].idle_power_w == pytest.approx(10)
    # alone, the attributed energy is the dynamic energy
    assert res["A"].dynamic_energy_j == pytest.approx(40 * 20)


@settings(max_examples=40, deadline=None)
@given(spans=st.lists(st.tuples(st.floats(1, 50), st.floats(0.5, 20), st.floats(0, 8)),
                      min_size=1, max_size=6))
def test_attribution_conserves_dynamic_energy(spans: list[tuple[float, float, float]]) -> None:
    j = EnergyJoin()
    j.add_samples(batch(grid(0, 80, 0.25)), 0, 0)
    idle_w = 5.0
    j.add_baselines(HostBaselines(host="h1", baselines=[Baseline(
        scenario_id="idle0", start_ns=T0 - 10 * S, end_ns=T0, idle_power_w=idle_w,
        stream="package-0@rapl", basis="measured", scope="component")]), 0)
    wins = []
    for i, (a, d, cpu) in enumerate(spans):
        a = round(a * 4) / 4  # on the sample grid: the counter there is exact
        b = min(a + max(0.25, round(d * 4) / 4), 79.0)
        wins.append((a, b))
        j.add_finished(fin(f"s{i}", a, b, cpu_s=cpu), 0, i)
    res = j.ready(T0 + 90 * S)
    got = sum(r.attributed_dynamic_energy_j or 0.0 for r in res)
    # the host's dynamic energy over the union of the windows, cut at every edge
    edges = sorted({t for w in wins for t in w})
    want = 0.0
    for x, y in itertools.pairwise(edges):
        if any(a <= x and b >= y for a, b in wins):
            want += max(0.0, (e_j(y) - e_j(x)) - idle_w * (y - x))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def step(a: float, b: float, dt: float, idle_w: float, busy_w: float, t_busy: float
         ) -> PowerSamples:
    smp = [Sample(seq=i, ts_ns=T0 + round(t * S), mono_ns=0,
                  energy_j={"package-0": idle_w * min(t, t_busy) + busy_w * max(0.0, t - t_busy)})
           for i, t in enumerate(grid(a, b, dt))]
    return PowerSamples(host="h1", run_id="step", zones=[PKG], samples=smp)


def test_failed_scenario_with_cpu_time_still_shares_the_host() -> None:
    j = EnergyJoin()
    j.add_samples(step(0, 30, 0.5, 10.0, 50.0, 10.0), 0, 0)
    j.add_finished(fin("idle", 0, 4, codec="idle", cpu_s=0), 0, 0)
    j.add_failed(ScenarioFailed(event_id="f:failed", scenario_id="f", host="h1",
                                settings=EncodeSettings(codec="libx264"),
                                start_ns=T0 + 10 * S, end_ns=T0 + 20 * S, exit_code=1,
                                cpu_s=10.0), partition=0, offset=1)
    j.add_finished(fin("ok", 10, 20, cpu_s=30.0), 0, 2)
    res = {r.scenario_id: r for r in j.ready(T0 + 40 * S)}
    assert res["ok"].concurrent_scenarios == 1
    assert res["ok"].dynamic_energy_j == pytest.approx(400.0)  # 40 W over idle, 10 s
    assert res["ok"].attributed_dynamic_energy_j == pytest.approx(300.0)  # 30 of 40 CPU-s
    assert res["ok"].cpu_share == pytest.approx(0.75)


def test_an_open_overlapping_scenario_delays_emission_until_it_finishes() -> None:
    j = EnergyJoin(JoinConfig(timeout_s=100))
    j.add_samples(flat(0, 30, 0.5, 20.0), 0, 0)
    j.add_started(started("B", 12), 0, 1)
    j.add_finished(fin("A", 10, 20), 0, 2)
    assert j.ready(T0 + 31 * S) == []  # B overlaps A and is still running
    j.add_finished(fin("B", 12, 25), 0, 3)
    assert {r.scenario_id for r in j.ready(T0 + 31 * S)} == {"A", "B"}


def test_baseline_is_the_latest_before_the_start_whatever_the_processing_order() -> None:
    j = EnergyJoin()
    j.add_samples(flat(0, 100, 0.5, 20.0), 0, 0)
    j.add_finished(fin("enc", 50, 60), 0, 0)
    j.add_finished(fin("idle2", 70, 80, codec="idle", cpu_s=0), 0, 1)  # after: not used
    j.add_finished(fin("idle1", 10, 20, codec="idle", cpu_s=0), 0, 2)
    res = {r.scenario_id: r for r in j.ready(T0 + 101 * S)}
    assert res["enc"].idle_baseline_id == "idle1"
    (rec,) = j.take_baseline_updates()
    assert [b.scenario_id for b in rec.baselines] == ["idle1", "idle2"]


# ---- idempotency and restart ------------------------------------------------------------

def test_a_replay_into_a_fresh_join_rewrites_the_same_records() -> None:
    def feed(j: EnergyJoin) -> list[ScenarioEnergy]:
        j.add_samples(batch(grid(0, 30, 0.1)), 0, 0)
        j.add_finished(fin("idle", 0, 5, codec="idle", cpu_s=0), 0, 0)
        j.add_finished(fin("a", 6, 16, cpu_s=5), 0, 1)
        j.add_finished(fin("b", 10, 20, cpu_s=9), 0, 2)
        return j.ready(T0 + 31 * S)

    first = {r.scenario_id: r for r in feed(EnergyJoin())}
    again = {r.scenario_id: r for r in feed(EnergyJoin())}
    assert first == again
    # a duplicate finished event after emission yields the identical record again
    j = EnergyJoin()
    feed(j)
    j.add_finished(fin("b", 10, 20, cpu_s=9), 0, 2)
    (dup,) = j.ready(T0 + 32 * S)
    assert dup == first["b"]


def test_baselines_read_back_after_a_restart_give_the_same_dynamic_energy() -> None:
    j = EnergyJoin()
    j.add_samples(batch(grid(0, 30, 0.1)), 0, 0)
    j.add_finished(fin("idle", 0, 5, codec="idle", cpu_s=0), 0, 0)
    j.ready(T0 + 6 * S)
    (rec,) = j.take_baseline_updates()
    j.add_finished(fin("a", 10, 20, cpu_s=5), 0, 1)
    (before,) = j.ready(T0 + 31 * S)
    # restart: the idle window's events were committed past; only host.baselines survives
    k = EnergyJoin()
    k.add_baselines(HostBaselines.from_bytes(rec.to_bytes()), 0)
    k.add_samples(batch(grid(5, 30, 0.1)), 0, 0)
    k.add_finished(fin("a", 10, 20, cpu_s=5), 0, 1)
    (after,) = k.ready(T0 + 31 * S)
    assert after == before and after.dynamic_energy_j is not None


def test_occupants_pin_the_offsets_that_replay_them() -> None:
    j = EnergyJoin(JoinConfig(grace_s=5))
    j.add_samples(batch(grid(0, 20, 0.5)), 3, 10)
    j.add_finished(fin("a", 2, 8), 3, 4)
    j.ready(T0 + 21 * S)
    j.add_samples(batch(grid(20.5, 40, 0.5)), 3, 11)
    j.ready(T0 + 41 * S)
    samples_min, events_min = j.min_offsets()
    # no later event read yet: one may still overlap "a", so "a" keeps pinning
    assert events_min.get(3) == 4
    j.add_finished(fin("z", 30, 31), 3, 5)
    j.ready(T0 + 41 * S)
    samples_min, events_min = j.min_offsets()
    assert events_min.get(3) == 5  # "a" ended long before events read minus grace: released
    assert samples_min[3] == 11
