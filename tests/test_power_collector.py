"""power_collector: counter wrap, zone selection on a fake powercap tree, CPU-time model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.power_collector.logic import (
    CounterTracker,
    CpuTimeEstimator,
    CpuTimes,
    parse_proc_stat,
)
from services.power_collector.sources import EstimateSource, RaplSource, SourceUnavailable
from tests.fakes.powercap import intel_two_packages

S = 10**9


def test_counter_wrap_adds_range_plus_one() -> None:
    t = CounterTracker(max_range_uj=999, max_power_w=0.01)
    assert t.update(900, 0)[0] == 0.0
    j, amb = t.update(100, S // 100)  # wrapped: 99 + 1 + 100 = 200 µJ
    assert j == pytest.approx(200e-6)
    assert not amb
    assert t.wraps == 1


def test_long_interval_is_flagged_ambiguous() -> None:
    # 65 536 J range (AMD-like) at a plausible 500 W: anything over 131 s could hide 2 wraps
    t = CounterTracker(max_range_uj=65_536_000_000, max_power_w=500)
    t.update(0, 0)
    assert t.update(1_000_000, 10 * S)[1] is False
    assert t.update(2_000_000, 10 * S + 200 * S)[1] is True


def test_rapl_zones_do_not_overlap(tmp_path: Path) -> None:
    tree = intel_two_packages(tmp_path)
    src = RaplSource(tree.class_dir)
    zones = {z.name: z for z in src.zones()}
    in_total = sorted(n for n, z in zones.items() if z.in_total)
    assert in_total == ["dram-0", "dram-1", "package-0", "package-1"]
    assert not zones["psys"].in_total
    assert not zones["core-0"].in_total and not zones["uncore-1"].in_total
    # the mmio duplicate of package-0 is not published at all
    assert len([z for z in zones if z.startswith("package-0")]) == 1


def test_rapl_reads_energy_across_wrap(tmp_path: Path) -> None:
    tree = intel_two_packages(tmp_path, max_range_uj=50_000_000)  # 50 J range
    src = RaplSource(tree.class_dir)
    src.read(0)
    truth = 0.0
    for i in range(1, 30):
        tree.spend("intel-rapl:0", 7.5)  # wraps every ~7 reads
        truth += 7.5
        r = src.read(i * S // 10)
    assert r.energy_j["package-0"] == pytest.approx(truth, rel=1e-9)
    assert r.power_w["package-0"] == pytest.approx(75.0, rel=1e-6)


def test_unreadable_energy_is_an_error_naming_the_fixes(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads 0000 files; permission errors cannot be provoked as root")
    tree = intel_two_packages(tmp_path)
    tree.deny("intel-rapl:0")
    with pytest.raises(SourceUnavailable, match="CAP_DAC_READ_SEARCH"):
        RaplSource(tree.class_dir)


def test_missing_tree_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no powercap tree"):
        RaplSource(tmp_path / "nope")


def test_proc_stat_parse_and_estimate() -> None:
    t = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert t == CpuTimes(busy=150, total=1000)
    est = CpuTimeEstimator(idle_w=10, max_w=50)
    est.update(CpuTimes(0, 0), 0)
    j, p = est.update(CpuTimes(busy=50, total=100), 2 * S)  # 50 % busy for 2 s
    assert p == pytest.approx(30.0)
    assert j == pytest.approx(60.0)


def test_estimate_source_reads_a_proc_stat_file(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  0 0 0 100 0 0 0 0\n")
    src = EstimateSource(idle_w=5, max_w=25, proc_stat=stat)
    assert src.zones()[0].basis == "estimated"
    src.read(0)
    stat.write_text("cpu  100 0 0 100 0 0 0 0\n")  # 100 % busy for 1 s
    r = src.read(S)
    assert r.power_w["cpu"] == pytest.approx(25.0)
    assert r.energy_j["cpu"] == pytest.approx(25.0)
