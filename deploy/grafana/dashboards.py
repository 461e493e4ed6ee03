"""Source of the provisioned Grafana dashboards (``deploy/grafana/dashboards/*.json``).

Run ``python deploy/grafana/dashboards.py`` after editing; a test fails when the JSON files
drift from this source.  Every query uses only metrics the services export today; what the
dashboards cannot show yet is listed in each dashboard's "Not shown yet" text panel and in
docs/deploy.md (with the metric that would make it possible).

Conventions: one Prometheus datasource, uid :data:`DS_UID` (provisioned in
``provisioning/datasources``); template variables ``host``, ``codec``, ``preset``,
``service`` with an "All" value of ``.*``; ``$__rate_interval`` for rates.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DS_UID = "joulestream-prometheus"
DS = {"type": "prometheus", "uid": DS_UID}
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39

# template variables: name -> (label, label_values() query)
VARIABLES: dict[str, tuple[str, str]] = {
    "host": ("Host", "label_values(joulestream_power_watts, host)"),
    "codec": ("Codec", "label_values(joulestream_cost_worker_scenario_cost_count, codec)"),
    "preset": ("Preset", "label_values(joulestream_cost_worker_scenario_cost_count, preset)"),
    "service": ("Service", 'label_values(up{stack="joulestream"}, job)'),
}

# joins a collector's own (host-less) metrics to its host through the source info metric
BY_HOST = (' * on (instance) group_left (host) '
           'joulestream_power_collector_source_info{host=~"$host"}')
WORKER = 'job=~"$service"'


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class Text:
    title: str
    content: str
    width: int = 24
    height: int = 5


def _stat(title: str, targets: list[tuple[str, str]], unit: str = "short",
          description: str = "", width: int = 6, **kw: Any) -> Panel:
    return Panel(title, targets, unit, "stat", description, width, 5, instant=True,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "textMode": "value_and_name", "colorMode": "value"}, **kw)


def _bars(title: str, targets: list[tuple[str, str]], unit: str = "short",
          description: str = "", width: int = 12, **kw: Any) -> Panel:
    return Panel(title, targets, unit, "bargauge", description, width, 8, instant=True,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "orientation": "horizontal", "displayMode": "gradient",
                          "showUnfilled": True}, **kw)


def _table(title: str, targets: list[tuple[str, str]], description: str = "",
           width: int = 12) -> Panel:
    return Panel(title, targets, "short", "table", description, width, 6, instant=True,
                 fmt="table", options={"showHeader": True})


def _quantiles(metric: str, by: str = "", sel: str = "") -> list[tuple[str, str]]:
    grp = f"{by}, le" if by else "le"
    legend = "{{" + by + "}} " if by else ""
    return [(f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{sel}"
             f"[$__rate_interval])))", f"{legend}p{int(q * 100)}") for q in (0.5, 0.95)]


def _name_re(suffix: str, extra: str = "") -> str:
    """Selector for one loop metric across every worker (``joulestream_<service>_<suffix>``)."""
    more = f", {extra}" if extra else ""
    return '{__name__=~"joulestream_.+_' + suffix + '"' + more + "}"


def power() -> tuple[str, str, list[Panel | Text]]:
    w = '{host=~"$host"}'
    return "joulestream-power", "joulestream · Power", [
        Panel("Power per zone", [(f"joulestream_power_watts{w}",
                                  "{{host}} {{zone}} · {{basis}} ({{source}})")], "watt",
              description="Power over the last sampling interval, per host and zone. Overlapping "
              "zones (core ⊂ package ⊂ psys) are separate series: never add them up. basis "
              "says measured (RAPL, NVML, smart plug) or estimated (CPU-time model)."),
        Panel("Power from the energy counter", [
            (f"rate(joulestream_energy_joules_total{w}[$__rate_interval])",
             "{{host}} {{zone}} · {{basis}}")], "watt",
              description="Derivative of the collector's cumulative, wrap-corrected joules: a "
              "cross-check of the power gauge that does not depend on the sampling interval."),
        _stat("Zones by basis", [(f"count by (basis) (joulestream_power_watts{w})",
                                  "{{basis}}")],
              description="How many zones are measured and how many estimated."),
        _bars("Energy since collector start", [
            (f"joulestream_energy_joules_total{w}", "{{host}} {{zone}} · {{basis}}")], "joule",
              width=18),
        Panel("Idle floor: lowest power per zone over 1 h", [
            (f"min_over_time(joulestream_power_watts{w}[1h])", "{{host}} {{zone}} · {{basis}}")],
              "watt", description="The lowest interval power seen in the last hour, an upper "
              "bound on idle power. The idle baseline the energy worker subtracts comes from "
              "idle windows (codec 'idle'): see 'Idle-window energy' on the Scenarios "
              "dashboard."),
        _table("Power source per collector", [
            ("joulestream_power_collector_source_info" + w, "")],
               description="Which source each collector opened and why (auto picks RAPL when "
               "powercap is readable, else the CPU-time estimate)."),
        Panel("Delivered samples per second", [
            ("rate(joulestream_power_collector_published_samples_total[$__rate_interval])"
             + BY_HOST, "{{host}}")], "short"),
        Panel("Sampling health", [
            ("joulestream_power_collector_sampling_lag_seconds" + BY_HOST, "{{host}} lag (s)"),
            ("rate(joulestream_power_collector_missed_deadlines_total[$__rate_interval])"
             + BY_HOST, "{{host}} missed deadlines /s"),
            ("rate(joulestream_power_collector_read_errors_total[$__rate_interval])" + BY_HOST,
             "{{host}} read errors /s")], "short",
              description="Lateness of the last sample after its deadline, skipped deadlines "
              "and failed reads."),
        Panel("Spool and dropped samples", [
            ("joulestream_power_collector_spool_samples" + BY_HOST, "{{host}} waiting"),
            ("joulestream_power_collector_dropped_samples_total" + BY_HOST,
             "{{host}} dropped (total)")], "short",
              description="Samples waiting for the broker; beyond the spool bound the oldest "
              "are dropped and counted, never silently."),
    ]


def scenarios() -> tuple[str, str, list[Panel | Text]]:
    m = "joulestream_energy_worker_scenario_energy_joules"
    c = '{codec=~"$codec", codec!="idle"}'
    return "joulestream-scenarios", "joulestream · Scenarios & energy", [
        _bars("Mean energy per scenario by codec", [
            (f"sum by (codec) ({m}_sum{c}) / sum by (codec) ({m}_count{c})", "{{codec}}")],
              "joule", description="Mean energy of the scenarios the energy worker emitted "
              "since it started (measured and estimated together; see the basis split)."),
        _bars("Idle-window energy (baseline windows)", [
            (f'sum({m}_sum{{codec="idle"}}) / sum({m}_count{{codec="idle"}})', "mean idle window")],
              "joule", description="Mean energy of idle-baseline windows (codec 'idle'); the "
              "energy worker derives idle power and dynamic energy from them."),
        _stat("Scenarios emitted by basis and trigger", [
            ("sum by (basis, emitted_by) (joulestream_energy_worker_scenarios_total)",
             "{{basis}} · {{emitted_by}}")], width=12,
              description="watermark: samples covered the scenario (complete); timeout: "
              "emitted after the join timeout with complete=false and its coverage."),
        _stat("Pending scenarios", [("joulestream_energy_worker_pending_scenarios", "pending")],
              description="Finished scenarios waiting for power samples to cover their end."),
        _stat("Power samples joined /s", [
            ("sum(rate(joulestream_energy_worker_samples_total[$__rate_interval]))", "samples/s")]),
        Panel("Scenario energy accounted per minute by codec", [
            (f"sum by (codec) (rate({m}_sum{c}[$__rate_interval])) * 60", "{{codec}}")], "joule"),
        Panel("Scenarios finished per minute by codec", [
            (f"sum by (codec) (rate({m}_count{c}[$__rate_interval])) * 60", "{{codec}}")],
              "short"),
        _bars("Energy per scenario: distribution", [
            (f"sum by (le) ({m}_bucket{c})", "≤ {{le}} J")], "short", width=24,
              fmt="heatmap",
              description="Cumulative count of scenarios at or below each energy bound."),
        Text("Not shown yet", "Energy in joules per setting (preset, resolution, bitrate), "
             "mean power per scenario and dynamic (above-idle) energy are in the "
             "`scenario.energy` records and the report, but not exported as metrics: the "
             "energy histogram is labelled by codec only. Per-setting efficiency (VMAF per kJ, "
             "pixels per joule, billed kWh) is on the Quality and Cost dashboards."),
    ]


def quality() -> tuple[str, str, list[Panel | Text]]:
    v = "joulestream_quality_worker_vmaf"
    k = "joulestream_cost_worker_vmaf_per_kilojoule"
    s = '{codec=~"$codec", preset=~"$preset"}'
    return "joulestream-quality", "joulestream · Quality", [
        _bars("Mean VMAF by codec and preset", [
            (f"sum by (codec, preset) ({v}_sum{s}) / sum by (codec, preset) ({v}_count{s})",
             "{{codec}} {{preset}}")], "short", defaults={"min": 0, "max": 100}),
        _bars("Mean VMAF NEG by codec and preset", [
            (f"sum by (codec, preset) ({v}_neg_sum{s}) / sum by (codec, preset) "
             f"({v}_neg_count{s})", "{{codec}} {{preset}}")], "short",
              defaults={"min": 0, "max": 100},
              description="VMAF NEG (no enhancement gain): the score to trust when "
              "sharpening or other enhancement may be inflating VMAF."),
        _bars("Quality per energy: VMAF per kJ", [
            (f"sum by (codec, preset, resolution, basis) ({k}_sum{s}) / "
             f"sum by (codec, preset, resolution, basis) ({k}_count{s})",
             "{{codec}} {{preset}} {{resolution}} · {{basis}}")], "short", width=24,
              description="Mean of VMAF ÷ kJ per encode (computed by the cost worker once "
              "both the energy and the quality of a scenario are known). Shown instead of "
              "VMAF per watt, which ignores how long an encode runs. basis: measured or "
              "estimated energy."),
        _bars("VMAF distribution", [(f"sum by (le) ({v}_bucket{s})", "≤ {{le}}")], "short",
              fmt="heatmap", description="Cumulative count of encodes at or below each VMAF."),
        Panel("Scoring time per encode", _quantiles("joulestream_quality_worker_compute_seconds"),
              "s"),
        Panel("Scoring speed (frames per second, per job)",
              _quantiles("joulestream_quality_worker_scoring_frames_per_second"), "short"),
        Panel("Frames scored per second", [
            ("sum(rate(joulestream_quality_worker_frames_scored_total[$__rate_interval]))",
             "frames/s")], "short"),
        _stat("Scoring jobs", [("sum(joulestream_quality_worker_jobs_in_flight)", "running"),
                               ("sum(joulestream_quality_worker_jobs_queued)", "queued"),
                               ("sum(joulestream_quality_worker_jobs_total)", "started")],
              width=12),
        _stat("Scoring failures by reason", [
            ("sum by (reason) (joulestream_quality_worker_failures_total)", "{{reason}}")],
              width=12, description="Each failure is also a dead letter with its reason."),
        Text("Not shown yet", "PSNR and SSIM are in the `quality.results` records and the "
             "report, but only VMAF and VMAF NEG are exported as Prometheus metrics. See "
             "docs/deploy.md.", width=12),
    ]


def cost() -> tuple[str, str, list[Panel | Text]]:
    p = "joulestream_cost_worker"
    m = f"{p}_scenario_cost"
    g = f"{p}_carbon_grams_total"
    s = '{codec=~"$codec", preset=~"$preset"}'
    by = "codec, preset, resolution, basis"
    lg = "{{codec}} {{preset}} {{resolution}} · {{basis}}"

    def mean(metric: str, extra: str = "") -> str:
        grp = f"{by}{extra}"
        return f"sum by ({grp}) ({metric}_sum{s}) / sum by ({grp}) ({metric}_count{s})"

    return "joulestream-cost", "joulestream · Cost & carbon", [
        _bars("Mean cost per scenario", [(mean(m, ", currency"), lg + " ({{currency}})")],
              "short", defaults={"decimals": 6},
              description="Energy cost plus compute cost per scenario, in the price book's "
              "currency (label currency); basis says whether the energy was measured or "
              "estimated."),
        _bars("Mean cost per megapixel", [(mean(f"{p}_cost_per_megapixel", ", currency"),
                                           lg + " ({{currency}})")], "short",
              defaults={"decimals": 9}),
        _bars("Mean cost per viewer watch-hour", [(mean(f"{p}_cost_per_viewer_hour",
                                                        ", currency"), lg + " ({{currency}})")],
              "short", defaults={"decimals": 6},
              description="Encode share plus delivery per viewer-hour (price book audience "
              "assumptions)."),
        _stat("Total cost of priced scenarios", [
            (f"sum by (currency, basis) ({m}_sum{s})", "{{currency}} · {{basis}} energy")],
              width=12, defaults={"decimals": 6}),
        _bars("Carbon (gCO2e)", [(f"sum by ({by}) ({g}{s})", lg)], "massg"),
        _bars("Billed energy (kWh, × wall factor × PUE)", [
            (f"sum by ({by}) ({p}_billed_energy_kwh_total{s})", lg)], "kwatth"),
        Panel("Carbon per hour", [
            (f"sum by (codec, preset) (rate({g}{s}[$__rate_interval])) * 3600",
             "{{codec}} {{preset}}")], "massg"),
        _bars("Pixels per joule", [(mean(f"{p}_pixels_per_joule"), lg)], "short"),
        _bars("Quality-weighted pixels per joule", [
            (mean(f"{p}_quality_weighted_pixels_per_joule"), lg)], "short",
              description="Pixels × VMAF/100 per joule: efficiency that does not reward "
              "cheap, bad encodes."),
        Panel("Scenarios priced per minute", [
            (f"sum by (codec, preset) (rate({m}_count{s}[$__rate_interval])) * 60",
             "{{codec}} {{preset}}")]),
    ]


def models() -> tuple[str, str, list[Panel | Text]]:
    t = "joulestream_trainer"
    return "joulestream-models", "joulestream · Models", [
        _bars("Grouped-CV mean absolute error per target", [
            (f"{t}_model_cv_mae", "{{target}}")], "short",
              description="Cross-validated with whole settings families held out; in the "
              "target's own unit (see model.updates)."),
        _bars("Grouped-CV mean absolute % error per target", [
            (f"{t}_model_cv_mape_ratio", "{{target}}")], "percentunit"),
        _bars("Prediction-interval coverage per target", [
            (f"{t}_model_interval_coverage_ratio", "{{target}}")], "percentunit",
              defaults={"min": 0, "max": 1},
              description="Share of held-out records inside the model's prediction interval."),
        _bars("Drift: error on records not trained on", [
            (f"{t}_model_drift_mape_ratio", "{{target}}")], "percentunit",
              description="MAPE of the current model on complete records that arrived after "
              "it was trained; rising drift means retrain (or the hardware changed)."),
        Panel("Dataset records by state", [(f"{t}_dataset_records", "{{state}}")], "short",
              description="complete: energy, quality and cost joined; waiting: parts still "
              "missing; incomplete: energy was not fully covered by samples."),
        _stat("Last training", [(f"{t}_last_training_timestamp_seconds * 1000 > 0", "trained")],
              "dateTimeFromNow"),
        _stat("Trainings by outcome", [
            (f"sum by (outcome, trigger) ({t}_trainings_total)", "{{outcome}} · {{trigger}}")]),
        _stat("Model updates published", [
            (f'sum({t}_messages_produced_total{{topic="model.updates"}})', "model.updates")],
              width=12),
    ]


def pipeline() -> tuple[str, str, list[Panel | Text]]:
    return "joulestream-pipeline", "joulestream · Pipeline health", [
        _stat("Scrape up", [(f'up{{stack="joulestream", {WORKER}}}', "{{job}} {{instance}}")],
              width=12, description="1 when Prometheus can read the service's /metrics."),
        _stat("Worker loop up", [(_name_re("up", WORKER), "{{job}}")], width=12,
              description="1 while the consume → process → produce → commit loop runs."),
        Panel("Consumer lag (high-water mark − position)", [
            (f"sum by (job, topic) ({_name_re('consumer_lag_messages', WORKER)})",
             "{{job}} ← {{topic}}")], "short",
              description="Summed over the partitions each worker owns; computed by the worker "
              "from the broker's high-water marks after every poll."),
        Panel("Dead letters per minute", [
            (f"sum by (job, topic, error_type) (rate("
             f"{_name_re('dead_letters_total', WORKER)}[$__rate_interval])) * 60",
             "{{job}} {{topic}} {{error_type}}")], "short"),
        _stat("Dead letters since start", [
            (f"sum by (job, topic, error_type) ({_name_re('dead_letters_total', WORKER)})",
             "{{job}} {{topic}} {{error_type}}")], width=12,
              description="Read them from <topic>.dlq: each carries the reason and the "
              "original bytes."),
        _table("Alerts", [("ALERTS", "")],
               description="Pending and firing joulestream alerts (rules in "
               "deploy/prometheus/rules)."),
        Panel("Batch processing time p95", [
            (f"histogram_quantile(0.95, sum by (job, le) (rate("
             f"{_name_re('batch_processing_seconds_bucket', WORKER)}[$__rate_interval])))",
             "{{job}}")], "s",
              description="One polled batch: decode, process, produce (acknowledged), commit."),
        Panel("Energy record latency (scenario end → scenario.energy)",
              _quantiles("joulestream_energy_worker_emit_latency_seconds"), "s"),
        Panel("Messages consumed per second", [
            (f"sum by (job, topic) (rate({_name_re('messages_consumed_total', WORKER)}"
             f"[$__rate_interval]))", "{{job}} ← {{topic}}")], "short"),
        Panel("Messages produced per second", [
            (f"sum by (job, topic) (rate({_name_re('messages_produced_total', WORKER)}"
             f"[$__rate_interval]))", "{{job}} → {{topic}}")], "short"),
        Panel("Time since last commit", [
            (f"time() - ({_name_re('last_commit_timestamp_seconds', WORKER)} > 0)", "{{job}}")],
              "s"),
    ]


def _layout(items: list[Panel | Text]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, it in enumerate(items, 1):
        if x + it.width > 24:
            x, y, row_h = 0, y + row_h, 0
        grid = {"h": it.height, "w": it.width, "x": x, "y": y}
        x += it.width
        row_h = max(row_h, it.height)
        if isinstance(it, Text):
            panels.append({"id": i, "type": "text", "title": it.title, "gridPos": grid,
                           "options": {"mode": "markdown", "content": it.content}})
            continue
        targets = [{"refId": chr(ord("A") + n), "datasource": DS, "expr": expr,
                    "legendFormat": legend or "__auto", "range": not it.instant,
                    "instant": it.instant, "format": it.fmt}
                   for n, (expr, legend) in enumerate(it.targets)]
        panels.append({
            "id": i, "type": it.kind, "title": it.title, "description": it.description,
            "gridPos": grid, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": {"unit": it.unit, **it.defaults}, "overrides": []},
            "options": it.options or {"legend": {"displayMode": "list", "placement": "bottom"},
                                      "tooltip": {"mode": "multi"}},
        })
    return panels


def _variable(name: str) -> dict[str, Any]:
    label, query = VARIABLES[name]
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": query, "definition": query, "refresh": 2, "sort": 1,
            "includeAll": True, "allValue": ".*", "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def dashboard(uid: str, title: str, items: list[Panel | Text]) -> dict[str, Any]:
    panels = _layout(items)
    text = json.dumps(panels)
    used = [v for v in VARIABLES if f"${v}" in text]
    return {
        "uid": uid, "title": title, "tags": ["joulestream"], "schemaVersion": SCHEMA_VERSION,
        "version": 1, "editable": True, "graphTooltip": 1, "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [_variable(v) for v in used]},
        "links": [{"title": "joulestream", "type": "dashboards", "tags": ["joulestream"],
                   "asDropdown": True}],
        "panels": panels,
    }


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, for every provisioned dashboard."""
    out = {}
    for make in (power, scenarios, quality, cost, models, pipeline):
        uid, title, items = make()
        out[f"{uid}.json"] = dashboard(uid, title, items)
    return out


def render(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, d in build().items():
        (OUT_DIR / name).write_text(render(d))
        print(OUT_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
