"""Static checks of the observability files: Prometheus config and alert rules (with the real
``promtool``), and the provisioned Grafana dashboards (datasource and variable consistency).

The live proof — every panel query and alert expression returning data from a real
Prometheus scraping a pipeline run — is tests/test_observability_live.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "joulestream.rules.yml"
RULE_TESTS = PROM_DIR / "rules" / "joulestream.rules.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

#: every alert expression is "<signal> <comparison> <number>" (the live test evaluates both)
ALERT_SHAPE = re.compile(
    r"^(?P<signal>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[-+0-9.e]+)\s*$", re.S)
#: Grafana's own variables, substituted by Grafana itself
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}
VAR_RE = re.compile(r"\$\{?(\w+)")


def load_dashboards_module() -> ModuleType:
    name = "joulestream_grafana_dashboards"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GRAFANA / "dashboards.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def dashboards() -> dict[str, dict[str, Any]]:
    files = sorted((GRAFANA / "dashboards").glob("*.json"))
    return {p.name: json.loads(p.read_text()) for p in files}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def panel_targets(d: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in d["panels"] for t in p.get("targets", [])]


def provisioned_datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    return str(ds["uid"])


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


# --------------------------------------------------------------------------- Prometheus

def test_promtool_checks_config_with_its_rules(tmp_path: Path) -> None:
    """The compose config, with rule_files pointed at the repository's rules."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    cfg["rule_files"] = [str(PROM_DIR / "rules" / "*.rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    r = run(PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "SUCCESS" in out and f"{len(alert_rules())} rules found" in out


def test_promtool_checks_rules() -> None:
    r = run(PROMTOOL, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    r = run(PROMTOOL, "test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are not vacuous: with a threshold that never fires they fail."""
    broken = RULES.read_text().replace("> 400", "> 4000")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    r = run(PROMTOOL, "test", "rules", str(tmp_path / RULE_TESTS.name))
    assert r.returncode != 0 and "JoulestreamPowerAboveThreshold" in r.stdout + r.stderr


def test_required_alerts_exist_and_each_is_unit_tested_both_ways() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert names >= {"JoulestreamServiceDown", "JoulestreamCollectorSilent",
                     "JoulestreamNoPowerSamples", "JoulestreamDeadLettersGrowing",
                     "JoulestreamConsumerLagGrowing", "JoulestreamPowerAboveThreshold"}
    fires: set[str] = set()
    quiet: set[str] = set()
    for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    assert fires == names, f"alerts never shown firing: {names - fires}"
    assert quiet == names, f"alerts never shown quiet: {names - quiet}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_signal_shape_and_docs(rule: dict[str, Any]) -> None:
    assert ALERT_SHAPE.match(rule["expr"].strip()), rule["expr"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_scrape_config_covers_every_service() -> None:
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for svc in ("power-collector", "energy-worker", "quality-worker", "cost-worker", "trainer"):
        (sc,) = jobs[svc]["static_configs"]
        assert sc["labels"] == {"stack": "joulestream"}
        (target,) = sc["targets"]
        assert target.split(":")[0] == svc


# --------------------------------------------------------------------------- Grafana

def test_dashboard_files_are_generated_from_the_source() -> None:
    mod = load_dashboards_module()
    built = mod.build()
    on_disk = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(built) == set(on_disk)
    for name, d in built.items():
        assert mod.render(d) == on_disk[name], f"{name} drifted: run deploy/grafana/dashboards.py"


def test_required_dashboards_exist() -> None:
    titles = {d["title"] for d in dashboards().values()}
    for want in ("Power", "Scenarios & energy", "Quality", "Cost & carbon", "Models",
                 "Pipeline health"):
        assert any(t.endswith(want) for t in titles), want


def test_dashboards_use_the_provisioned_datasource_everywhere() -> None:
    uid = provisioned_datasource_uid()
    uids = [d["uid"] for d in dashboards().values()]
    assert len(set(uids)) == len(uids)
    for name, d in dashboards().items():
        assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36, name
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        for p in d["panels"]:
            if p["type"] == "text":
                assert "targets" not in p
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": uid}, (name, p["title"])
            assert p["targets"], (name, p["title"])
        for p, t in panel_targets(d):
            assert t["datasource"]["uid"] == uid, (name, p["title"])
            assert t["expr"].strip(), (name, p["title"])
        for v in d["templating"]["list"]:
            assert v["datasource"]["uid"] == uid, (name, v["name"])


def test_dashboard_variables_are_defined_and_used() -> None:
    seen: set[str] = set()
    for name, d in dashboards().items():
        defined = {v["name"] for v in d["templating"]["list"]}
        seen |= defined
        used = {m for _, t in panel_targets(d) for m in VAR_RE.findall(t["expr"])}
        assert used - BUILTIN_VARS <= defined, f"{name}: undefined {used - BUILTIN_VARS - defined}"
        assert defined <= used, f"{name}: unused variables {defined - used}"
        for v in d["templating"]["list"]:
            assert re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]), v["query"]
    assert seen >= {"host", "codec", "preset"}


def test_grafana_provisioning_matches_compose_mounts() -> None:
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "joulestream.yml").read_text())
    (provider,) = prov["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
