"""The energy join: exact on synthetic profiles, watermarks, timeouts, never a silent zero."""

from __future__ import annotations

import pytest

from schemas.power_samples import PowerSamples, Sample, Zone
from schemas.scenario_events import EncodeSettings, ScenarioFinished, ScenarioStarted
from services.energy_worker.logic import EnergyJoin, JoinConfig

S = 10**9
T0 = 1_790_000_000 * S
ZONES = [Zone(name="package-0", kind="package", source="rapl", basis="measured",
              scope="component"),
         Zone(name="core-0", kind="core", source="rapl", basis="measured", scope="component",
              in_total=False),
         Zone(name="dram-0", kind="dram", source="rapl", basis="measured", scope="component")]


def power(t_s: float) -> float:
    """Synthetic package power: 20 W, a 60 W step between 10 s and 20 s."""
    return 80.0 if 10 <= t_s < 20 else 20.0


def energy_until(t_s: float) -> float:
    """Exact integral of power() from 0."""
    if t_s <= 10:
        return 20 * t_s
    if t_s <= 20:
        return 200 + 80 * (t_s - 10)
    return 1000 + 20 * (t_s - 20)


def samples(t_from: float, t_to: float, dt: float, seq0: int = 0) -> PowerSamples:
    out = []
    n = round((t_to - t_from) / dt)
    for i in range(n + 1):
        t = t_from + i * dt
        out.append(Sample(seq=seq0 + i, ts_ns=T0 + round(t * S), mono_ns=round(t * S),
                          energy_j={"package-0": energy_until(t), "core-0": 0.5 * energy_until(t),
                                    "dram-0": 2.0 * t}))
    return PowerSamples(host="h1", run_id="r1", zones=ZONES, samples=out)


def finished(sid: str, a: float, b: float, codec: str = "libx264") -> ScenarioFinished:
    return ScenarioFinished(event_id=f"{sid}:finished", scenario_id=sid, host="h1",
                            settings=EncodeSettings(codec=codec, duration_s=b - a),
                            start_ns=T0 + round(a * S), end_ns=T0 + round(b * S), frames=1,
                            cpu_s=1.0)


def test_energy_is_exact_on_a_step_profile() -> None:
    j = EnergyJoin()
    j.add_samples(samples(0, 30, 0.1), 0, 0)
    j.add_finished(finished("s", 5.05, 15.05), 0, 0)
    (res,) = j.ready(T0 + 31 * S)
    truth = energy_until(15.05) - energy_until(5.05) + 2.0 * 10
    assert res.energy_j == pytest.approx(truth, rel=1e-9)
    assert res.zones_j["package-0"] == pytest.approx(energy_until(15.05) - energy_until(5.05))
    assert "core-0" in res.zones_j  # reported, but not added to the total
    assert res.complete and res.coverage == pytest.approx(1.0)
    assert res.emitted_by == "watermark"
    assert res.basis == "measured" and res.sources == ["rapl"]
    assert res.peak_power_w == pytest.approx(82.0)  # 80 W package + 2 W dram


def test_out_of_order_and_duplicate_batches_give_the_same_result() -> None:
    a = EnergyJoin()
    a.add_samples(samples(0, 30, 0.1), 0, 0)
    b = EnergyJoin()
    b.add_samples(samples(15, 30, 0.1, seq0=150), 0, 1)
    b.add_samples(samples(0, 15, 0.1), 0, 0)
    b.add_samples(samples(0, 15, 0.1), 0, 0)  # replayed duplicate
    for j in (a, b):
        j.add_finished(finished("s", 3.0, 25.0), 0, 0)
    (ra,) = a.ready(T0 + 40 * S)
    (rb,) = b.ready(T0 + 40 * S)
    assert ra == rb


def test_waits_for_samples_that_cover_the_end() -> None:
    j = EnergyJoin(JoinConfig(timeout_s=30))
    j.add_samples(samples(0, 10, 0.1), 0, 0)
    j.add_finished(finished("s", 5, 12), 0, 0)
    assert j.ready(T0 + 12 * S) == []  # end not yet covered
    j.add_samples(samples(10.1, 13, 0.1, seq0=101), 0, 1)
    (res,) = j.ready(T0 + 13 * S)
    assert res.complete
    assert res.energy_j == pytest.approx(energy_until(12) - energy_until(5) + 14.0)


def test_timeout_emits_partial_with_coverage_never_silent_zero() -> None:
    j = EnergyJoin(JoinConfig(timeout_s=5))
    j.add_samples(samples(0, 10, 0.1), 0, 0)
    j.add_finished(finished("s", 8, 18), 0, 0)
    assert j.ready(T0 + 20 * S) == []
    (res,) = j.ready(T0 + 24 * S)
    assert res.emitted_by == "timeout"
    assert not res.complete
    assert res.coverage == pytest.approx(0.2)
    assert res.energy_j == pytest.approx(energy_until(10) - energy_until(8) + 4.0)
    assert res.max_gap_s >= 8 - 1e-9


def test_no_samples_at_all_is_flagged() -> None:
    j = EnergyJoin(JoinConfig(timeout_s=1))
    j.add_finished(finished("s", 0, 5), 0, 0)
    (res,) = j.ready(T0 + 10 * S)
    assert res.coverage == 0.0 and not res.complete and res.n_samples == 0
    assert res.sources == ["none"]


def test_idle_baseline_gives_dynamic_energy() -> None:
    j = EnergyJoin()
    j.add_samples(samples(0, 30, 0.1), 0, 0)
    j.add_finished(finished("idle", 0, 5, codec="idle"), 0, 0)
    (idle,) = j.ready(T0 + 31 * S)
    assert idle.mean_power_w == pytest.approx(22.0)
    j.add_finished(finished("enc", 10, 20), 0, 1)
    (enc,) = j.ready(T0 + 31 * S)
    assert enc.idle_power_w == pytest.approx(22.0)
    assert enc.dynamic_energy_j == pytest.approx(enc.energy_j - 22.0 * 10)


def test_safe_offsets_pin_what_state_still_needs() -> None:
    j = EnergyJoin(JoinConfig(grace_s=5))
    j.add_samples(samples(0, 10, 0.1), 2, 40)
    j.add_started(ScenarioStarted(event_id="s:started", scenario_id="s", host="h1",
                                  settings=EncodeSettings(codec="libx264"),
                                  start_ns=T0 + 2 * S), 2, 7)
    j.add_samples(samples(10.1, 30, 0.1, seq0=101), 2, 41)
    j.ready(T0 + 30 * S)
    samples_min, events_min = j.min_offsets()
    assert samples_min[2] == 40  # the open scenario still needs samples from t=2 s
    assert events_min[2] == 7
    j.add_finished(finished("s", 2, 12), 2, 9)
    j.ready(T0 + 30 * S)
    samples_min, events_min = j.min_offsets()
    # events have been read up to t=12 s: a later event may still overlap "s" (and need
    # samples from 7 s on), so its event and those samples stay uncommitted
    assert events_min[2] == 9
    assert samples_min[2] == 40
    j.add_finished(finished("t", 26, 28), 2, 10)
    j.ready(T0 + 30 * S)
    samples_min, events_min = j.min_offsets()
    assert events_min[2] == 10  # "s" is released; the new "t" pins its own event
    assert samples_min[2] == 41  # events read to 28 s: only the grace window is kept


def test_wall_plug_stream_is_reported_beside_component_never_added() -> None:
    j = EnergyJoin()
    j.add_samples(samples(0, 30, 0.1), 0, 0)
    plug_zone = Zone(name="plug:rack1", kind="wall", source="mqtt_plug", basis="measured",
                     scope="wall")
    plug = PowerSamples(host="h1", run_id="plug1", zones=[plug_zone], samples=[
        Sample(seq=i, ts_ns=T0 + i * S, mono_ns=i * S, energy_j={"plug:rack1": 100.0 * i})
        for i in range(31)])
    j.add_samples(plug, 0, 1)
    j.add_finished(finished("s", 5.0, 15.0), 0, 0)
    (res,) = j.ready(T0 + 31 * S)
    assert res.scope == "component" and res.sources == ["rapl"]  # component preferred
    assert res.energy_j == pytest.approx(energy_until(15) - energy_until(5) + 20.0)
    assert res.wall_energy_j == pytest.approx(1000.0) and res.wall_coverage == pytest.approx(1.0)
    # with only the plug, the plug is the energy (scope wall), and no separate wall figure
    k = EnergyJoin()
    k.add_samples(plug, 0, 1)
    k.add_finished(finished("s", 5.0, 15.0), 0, 0)
    (only,) = k.ready(T0 + 31 * S)
    assert only.scope == "wall" and only.energy_j == pytest.approx(1000.0)
    assert only.wall_energy_j is None
