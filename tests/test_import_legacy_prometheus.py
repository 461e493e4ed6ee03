"""The previous project's results JSON, enriched with energy from a REAL Prometheus.

A TSDB is backfilled with ``promtool tsdb create-blocks-from openmetrics`` from an
OpenMetrics file of RAPL counters - package zones *and* their subzones (core, dram, uncore)
plus psys, with one exporter restart (counter reset) - and served by /usr/bin/prometheus.
The importer must count package zones only; the old ``package.*`` regex is shown to double
count on the same server.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.trainer.cli import import_file
from services.trainer.importers import PromClient, parse_legacy
from services.trainer.store import DatasetStore

SAMPLE = Path(__file__).parent.parent / "examples" / "legacy" / "test_results_20251228_143000.json"
#: constant power per zone; package_0 + package_1 is what a scenario must get
POWER_W = {"package_0": 30.0, "package_1": 20.0, "package_0_core": 15.0,
           "package_0_dram": 5.0, "package_0_uncore": 2.0, "psys": 70.0}
PACKAGES_W = POWER_W["package_0"] + POWER_W["package_1"]
STEP_S = 5

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None
                                or shutil.which("promtool") is None,
                                reason="prometheus/promtool not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openmetrics(t_from: int, t_to: int, reset_at: int) -> str:
    """Counters sampled every 5 s; package_1's exporter restarts at ``reset_at``."""
    lines = ["# TYPE rapl_energy_joules counter"]
    for zone, w in POWER_W.items():
        for t in range(t_from, t_to + 1, STEP_S):
            if zone == "package_1" and t >= reset_at:
                # restarted exporter: counts from 0 since the previous sample, nothing lost
                v = w * (t - (reset_at - STEP_S))
            else:
                v = 1000.0 + w * (t - t_from)
            lines.append(f'rapl_energy_joules_total{{zone="{zone}"}} {v} {t}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def legacy_doc() -> dict:
    return json.loads(SAMPLE.read_text())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, legacy_doc: dict) -> Iterator[str]:
    d = tmp_path_factory.mktemp("prom")
    sc = legacy_doc["scenarios"]
    t_from = int(sc[0]["start_time"]) - 60
    # the data stops 60 s into the last scenario (+30 s gap +30 s stabilisation)
    t_to = int(sc[-2]["end_time"]) + 120
    reset_at = int(sc[3]["start_time"]) + 100  # inside scenario #3's window
    (d / "rapl.om").write_text(openmetrics(t_from, t_to, reset_at))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics",
                    str(d / "rapl.om"), str(d / "tsdb")], check=True, capture_output=True)
    (d / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    port = _free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={d / 'prometheus.yml'}",
         f"--storage.tsdb.path={d / 'tsdb'}", "--storage.tsdb.retention.time=100y",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(d / "prometheus.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("prometheus did not start: "
                                   + (d / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_legacy_parse_without_prometheus_waits_for_energy(legacy_doc: dict, tmp_path: Path
                                                          ) -> None:
    scenarios, errors = parse_legacy(SAMPLE.read_text(), SAMPLE.name)
    assert not errors and len(scenarios) == len(legacy_doc["scenarios"])
    by_name = {s.record.origin_ref: s for s in scenarios}
    assert all(s.record.energy_j is None for s in scenarios)  # the old file has no power
    names = [s["name"] for s in legacy_doc["scenarios"]]
    streams = {n: s.record.settings.streams for n, s in zip(names, by_name.values(),
                                                             strict=True)}
    # the old regex read "5 Mbps Stream" as 5 streams; we do not
    assert streams["5 Mbps Stream"] == 1 and streams["10 Mbps Stream"] == 1
    assert streams["4 Streams @ 2500k"] == 4
    assert scenarios[0].record.settings.is_idle
    h265 = scenarios[-1].record
    assert h265.settings.codec == "libx265" and h265.vmaf == pytest.approx(88.4)

    store = DatasetStore(tmp_path / "d.sqlite")
    summary, errs = import_file(store, str(SAMPLE))
    assert summary["format"] == "legacy" and not errs
    st = store.status()
    assert st.complete == 0
    assert st.reasons["legacy scenario: energy not yet enriched from Prometheus"] == 10
    assert st.reasons["idle baseline (not an encode)"] == 1


def test_enrichment_counts_package_zones_only(prometheus: str, legacy_doc: dict,
                                              tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "d.sqlite")
    out = tmp_path / "enriched.json"
    summary, errors = import_file(store, str(SAMPLE), prometheus=prometheus,
                                  write_json=str(out))
    n = len(legacy_doc["scenarios"])
    # everything but the idle window got energy (the last one only partly covered)
    assert summary["enriched"] == n - 1 and not errors
    recs = {r.origin_ref: r for _s, r, _st, _w in store.entries() if r is not None}
    for i, sc in enumerate(legacy_doc["scenarios"][1:-1], start=1):
        r = recs[f"{SAMPLE.name}#{i}"]
        wall = sc["end_time"] - sc["start_time"]
        assert r.energy_basis == "measured"
        assert r.energy_source == "prometheus:rapl_energy_joules_total"
        # exactly package_0 + package_1 (incl. scenario #3 across the counter reset)
        assert r.energy_j == pytest.approx(PACKAGES_W * wall, rel=1e-9)
        assert r.mean_power_w == pytest.approx(PACKAGES_W)
        assert r.energy_complete and r.energy_coverage == pytest.approx(1.0)

    # the old project's query on the same server: subzones double counted
    sc = legacy_doc["scenarios"][1]
    c = PromClient(prometheus)
    try:
        old = c.query_range('rapl_energy_joules_total{zone=~"package.*"}', sc["start_time"],
                            sc["end_time"], 5)
        ours = c.window_energy(sc["start_time"], sc["end_time"])
    finally:
        c.close()
    assert set(old) == {"package_0", "package_1", "package_0_core", "package_0_dram",
                        "package_0_uncore"}
    assert ours is not None and set(ours.zones_j) == {"package_0", "package_1"}

    # written back: a re-import needs no Prometheus any more (retention-proof)
    doc = json.loads(out.read_text())
    assert doc["scenarios"][1]["joulestream_energy"]["energy_j"] == pytest.approx(
        PACKAGES_W * (sc["end_time"] - sc["start_time"]))
    store2 = DatasetStore(tmp_path / "d2.sqlite")
    import_file(store2, str(out))
    again = {r.scenario_id: r.energy_j for _s, r, _st, _w in store2.entries() if r}
    assert again == {r.scenario_id: r.energy_j for r in recs.values()}
    # the last scenario: Prometheus' 5-minute lookback repeats the last sample, but the
    # sample timestamps show the data stops: incomplete, never a silently short energy
    last = recs[f"{SAMPLE.name}#{n - 1}"]
    assert not last.energy_complete and last.energy_coverage == pytest.approx(0.2, abs=0.02)
    st = store.status()
    assert st.complete == 0 and st.incomplete == n
    assert st.reasons[f"energy window only {last.energy_coverage:.0%} covered by samples"] == 1
    # legacy rows carry no VMAF (except the h265 one): never trainable, and said so
    assert st.reasons["legacy scenario without quality (no VMAF)"] == n - 2


def test_scenario_past_retention_is_reported_by_line(prometheus: str, legacy_doc: dict,
                                                     tmp_path: Path) -> None:
    doc = json.loads(json.dumps(legacy_doc))
    doc["scenarios"][2]["start_time"] -= 86_400 * 30  # a month before any data
    doc["scenarios"][2]["end_time"] -= 86_400 * 30
    f = tmp_path / "old.json"
    f.write_text(json.dumps(doc))
    store = DatasetStore(tmp_path / "d.sqlite")
    summary, errors = import_file(store, str(f), prometheus=prometheus)
    assert summary["no_prometheus_data"] == 1
    assert [e.line for e in errors] == [3] and "no package energy" in errors[0].message
    st = store.status()
    assert st.reasons["legacy scenario: energy not yet enriched from Prometheus"] == 1


def test_reimport_is_idempotent(prometheus: str, tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "d.sqlite")
    import_file(store, str(SAMPLE), prometheus=prometheus)
    first = [(s, r) for s, r, _a, _b in store.entries()]
    import_file(store, str(SAMPLE), prometheus=prometheus)
    assert [(s, r) for s, r, _a, _b in store.entries()] == first
