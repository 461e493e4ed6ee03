"""Importers: external measurements (CSV / JSONL) and the previous project's results JSON.

Parsing is pure (text in, records and per-line errors out); only :class:`PromClient` does
I/O.  The formats are documented in docs/trainer.md.

* A bad row is never dropped silently: it is reported with its line number and why.
* Energy is taken as the file says: ``energy_basis`` (measured/estimated) is required
  whenever a row carries energy; nothing is assumed.
* Legacy results (``{"test_date", "scenarios": [...]}``) carry no power data: each scenario
  is enriched with energy from Prometheus over its window, package zones only
  (``zone=~"package_[0-9]+"`` - PromQL regexes are anchored, so the subzones
  ``package_0_core``/``package_0_dram`` that the old ``package.*`` regex double counted are
  excluded), and written back so it never depends on the TSDB's retention again.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from schemas.scenario_events import EncodeSettings, HardwareInfo

from .records import DatasetRecord, hardware_class_of

# ---------------------------------------------------------------------------------------
# CSV / JSONL
# ---------------------------------------------------------------------------------------

#: column → (type, help).  Everything not listed is an error (typos must not pass silently).
COLUMNS: dict[str, tuple[type, str]] = {
    "scenario_id": (str, "unique id; default: a hash of the row's content"),
    "encoder": (str, "ffmpeg encoder name: libx264, libx265, libsvtav1, h264_nvenc ..."),
    "preset": (str, "encoder preset (veryfast, medium, 8 ...)"),
    "rate_control": (str, "crf | cbr | vbr | abr (crf needs crf; the others target_bitrate_kbps)"),
    "crf": (float, "CRF/CQ value"),
    "target_bitrate_kbps": (float, "rate-control target, kbit/s"),
    "resolution": (str, "WIDTHxHEIGHT (or give width and height)"),
    "width": (int, "pixels"),
    "height": (int, "pixels"),
    "fps": (float, "frames per second of the content"),
    "duration_s": (float, "seconds of content encoded (per stream)"),
    "streams": (int, "parallel streams encoded in the window (default 1)"),
    "threads": (int, "encoder threads (0/empty = encoder default)"),
    "host": (str, "machine name"),
    "cpu_model": (str, "CPU model string"),
    "logical_cpus": (int, "logical CPUs of the host"),
    "arch": (str, "x86_64, aarch64 ... (default unknown)"),
    "clip": (str, "source content id (cross-validation can hold out whole clips)"),
    "wall_s": (float, "wall-clock seconds of the encode"),
    "energy_j": (float, "energy of the encode window, joules"),
    "power_w": (float, "mean power over the window, watts (energy = power_w × wall_s)"),
    "energy_basis": (str, "measured | estimated - REQUIRED when energy or power is given"),
    "energy_source": (str, "rapl, wall-meter, nvml, estimate ... (default: unspecified)"),
    "energy_scope": (str, "component | wall (default component)"),
    "cpu_s": (float, "CPU seconds (user+system)"),
    "frames": (int, "frames encoded (all streams)"),
    "encode_fps": (float, "frames encoded per wall second"),
    "bitrate_kbps": (float, "achieved output bitrate per stream, kbit/s"),
    "vmaf": (float, "VMAF score 0..100"),
    "vmaf_model": (str, "e.g. vmaf_v0.6.1"),
    "psnr_y": (float, "dB"),
    "cost_total": (float, "money for the encode"),
    "currency": (str, "ISO 4217"),
    "carbon_g": (float, "grams CO2e"),
}

_NAME_OK = re.compile(r"[^A-Za-z0-9_.:@/+\-]+")


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ImportResult:
    records: list[DatasetRecord]
    errors: list[RowError]


def _name(text: str, default: str) -> str:
    t = _NAME_OK.sub("-", text.strip())[:200].strip("-")
    return t or default


def _convert(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    vals: dict[str, Any] = {}
    errs: list[str] = []
    for k, v in raw.items():
        if k not in COLUMNS:
            errs.append(f"unknown column {k!r}")
            continue
        if v is None or (isinstance(v, str) and v.strip() == ""):
            continue
        typ = COLUMNS[k][0]
        try:
            if typ is float:
                f = float(v)
                if not math.isfinite(f):
                    raise ValueError("not finite")
                vals[k] = f
            elif typ is int:
                f = float(v)
                if f != int(f):
                    raise ValueError("not an integer")
                vals[k] = int(f)
            else:
                vals[k] = str(v).strip()
        except (TypeError, ValueError):
            errs.append(f"{k}={v!r} is not a valid {typ.__name__}")
    return vals, errs


def record_from_row(raw: dict[str, Any], ref: str) -> DatasetRecord:
    """One external row → record.  Raises ValueError with every problem of the row."""
    v, errs = _convert(raw)
    for need in ("encoder", "fps", "duration_s"):
        if need not in v:
            errs.append(f"missing {need}")
    w, h = v.get("width"), v.get("height")
    if "resolution" in v:
        m = re.fullmatch(r"(\d+)\s*[xX×]\s*(\d+)", v["resolution"])
        if not m:
            errs.append(f"resolution {v['resolution']!r} is not WIDTHxHEIGHT")
        else:
            w, h = int(m.group(1)), int(m.group(2))
    if not w or not h:
        errs.append("missing resolution (or width and height)")
    rc = v.get("rate_control", "crf" if "crf" in v else "cbr").lower()
    crf = v.get("crf")
    tbr = v.get("target_bitrate_kbps")
    if rc == "crf":
        if crf is None:
            errs.append("rate_control crf needs a crf value")
        tbr = None
    elif rc in ("cbr", "vbr", "abr"):
        if tbr is None:
            errs.append(f"rate_control {rc} needs target_bitrate_kbps")
        crf = None
    else:
        errs.append(f"rate_control {rc!r} is not crf, cbr, vbr or abr")
    energy = v.get("energy_j")
    wall = v.get("wall_s")
    power = v.get("power_w")
    if energy is None and power is not None:
        if wall is None:
            errs.append("power_w given without wall_s (energy = power × time needs both)")
        else:
            energy = power * wall
    if power is None and energy is not None and wall:
        power = energy / wall
    basis = v.get("energy_basis")
    if energy is not None and basis not in ("measured", "estimated"):
        errs.append("energy_basis must be 'measured' or 'estimated' when energy is given"
                    + (f" (got {basis!r})" if basis else ""))
    scope = v.get("energy_scope", "component")
    if scope not in ("component", "wall"):
        errs.append(f"energy_scope {scope!r} is not component or wall")
    for k in ("energy_j", "power_w", "wall_s", "duration_s", "fps", "vmaf", "bitrate_kbps"):
        if k in v and v[k] < 0:
            errs.append(f"{k} is negative")
    if "vmaf" in v and v["vmaf"] > 110:
        errs.append("vmaf above 110")
    if errs:
        raise ValueError("; ".join(errs))
    hw = None
    if "cpu_model" in v or "logical_cpus" in v:
        cpu = v.get("cpu_model", "unknown")
        n = v.get("logical_cpus", 1)
        arch = v.get("arch", "unknown")
        hw = HardwareInfo(cpu_model=cpu, logical_cpus=n, arch=_name(arch, "unknown"),
                          hardware_class=hardware_class_of(cpu, n, arch))
    settings = EncodeSettings(
        codec=_name(v["encoder"], "unknown"), preset=_name(v["preset"], "default")
        if "preset" in v else None, bitrate_kbps=tbr, crf=crf, width=w or 0, height=h or 0,
        fps=v["fps"], duration_s=v["duration_s"], streams=v.get("streams", 1),
        threads=v.get("threads", 0), source=v.get("clip", ""))
    frames = v.get("frames")
    fps_enc = v.get("encode_fps")
    if fps_enc is None and frames and wall:
        fps_enc = frames / wall
    sid = v.get("scenario_id") or "imp-" + hashlib.sha256(
        json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return DatasetRecord(
        scenario_id=_name(sid, "imp"), origin="import", origin_ref=ref,
        host=_name(v.get("host", "external"), "external"), settings=settings, hardware=hw,
        clip=v.get("clip", ""), wall_s=wall, energy_j=energy,
        energy_basis=basis if energy is not None else None,
        energy_source=v.get("energy_source", "unspecified"), energy_scope=scope,
        mean_power_w=power, cpu_s=v.get("cpu_s"), frames=frames, encode_fps=fps_enc,
        bitrate_kbps=v.get("bitrate_kbps"), vmaf=v.get("vmaf"),
        vmaf_model=v.get("vmaf_model", ""), psnr_y=v.get("psnr_y"),
        cost_total=v.get("cost_total"), currency=v.get("currency", ""),
        carbon_g=v.get("carbon_g"))


def parse_measurements(text: str, fmt: str, name: str) -> ImportResult:
    """Parse a CSV (header row) or JSONL (one object per line) measurement file."""
    records: list[DatasetRecord] = []
    errors: list[RowError] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    if fmt == "csv":
        # lines starting with '#' are comments (provenance notes in example files)
        pos = {"line": 0}

        def lines() -> Any:
            for n, ln in enumerate(text.splitlines(), 1):
                if ln.lstrip().startswith("#") or not ln.strip():
                    continue
                pos["line"] = n
                yield ln
        reader = csv.reader(lines())
        header = [h.strip() for h in next(reader, [])]
        unknown = [c for c in header if c not in COLUMNS]
        if not header or unknown:
            return ImportResult([], [RowError(pos["line"] or 1, f"unknown columns {unknown}; "
                                              "see docs/trainer.md" if header else "empty file")])
        for values in reader:
            if len(values) != len(header):
                errors.append(RowError(pos["line"], f"{len(values)} values for "
                                                    f"{len(header)} header columns"))
                continue
            rows.append((pos["line"], dict(zip(header, values, strict=True))))
    elif fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(RowError(n, f"not JSON: {e.msg}"))
                continue
            if not isinstance(obj, dict):
                errors.append(RowError(n, "not a JSON object"))
                continue
            rows.append((n, obj))
    else:
        raise ValueError(f"unknown format {fmt!r}")
    for n, row in rows:
        try:
            records.append(record_from_row(row, f"{name}:{n}"))
        except (ValueError, ValidationError) as e:
            errors.append(RowError(n, str(e).replace("\n", " ")))
    return ImportResult(records, errors)


# ---------------------------------------------------------------------------------------
# legacy results JSON (the previous project's run_tests.py output)
# ---------------------------------------------------------------------------------------

_LEGACY_ENCODERS = {"h264": "libx264", "h265": "libx265", "hevc": "libx265",
                    "h264_nvenc": "h264_nvenc", "hevc_nvenc": "hevc_nvenc"}
#: multi-stream names of the old runner: "4 Streams @ 2500k".  Deliberately strict: the old
#: regex read "5 Mbps Stream" as 5 streams.
_STREAMS = re.compile(r"^\s*(\d+)\s+streams\s*@", re.IGNORECASE)
ENRICH_KEY = "joulestream_energy"


def parse_bitrate_kbps(text: str | float | int) -> float:
    """"2500k" → 2500, "5M" → 5000, bare number → kbit/s (the old scorer's reading)."""
    if isinstance(text, int | float):
        return float(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmM]?)(?:bps|b/s)?\s*", text)
    if not m:
        raise ValueError(f"bitrate {text!r} not understood")
    x = float(m.group(1))
    return x * 1000 if m.group(2) in ("m", "M") else x


@dataclass(frozen=True)
class LegacyScenario:
    index: int
    record: DatasetRecord
    start_s: float
    end_s: float


def parse_legacy(text: str, name: str, host: str = "legacy",
                 hardware: HardwareInfo | None = None) -> tuple[list[LegacyScenario],
                                                                list[RowError]]:
    """The old results JSON → records without energy (unless a previous enrichment was
    written back into the file).  Errors name the scenario index (``line`` = index + 1)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("scenarios"), list):
        return [], [RowError(1, 'not a results file: expected {"scenarios": [...]}')]
    out: list[LegacyScenario] = []
    errors: list[RowError] = []
    for i, sc in enumerate(doc["scenarios"]):
        try:
            out.append(_legacy_one(i, sc, name, host, hardware))
        except (KeyError, TypeError, ValueError, ValidationError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e).replace("\n", " ")
            label = sc.get("name", "?") if isinstance(sc, dict) else "?"
            errors.append(RowError(i + 1, f"scenario #{i} ({label}): {msg}"))
    return out, errors


def _legacy_one(i: int, sc: dict[str, Any], name: str, host: str,
                hardware: HardwareInfo | None) -> LegacyScenario:
    start, end = float(sc["start_time"]), float(sc["end_time"])
    if end <= start:
        raise ValueError("end_time is not after start_time")
    kbps = parse_bitrate_kbps(sc.get("bitrate", "0k"))
    idle = "baseline" in str(sc.get("name", "")).lower() or kbps == 0
    w, h = (int(x) for x in str(sc.get("resolution", "1280x720")).lower().split("x"))
    enc = str(sc.get("encoder") or sc.get("encoder_type") or "h264")
    streams = int(sc["streams"]) if "streams" in sc else (
        int(m.group(1)) if (m := _STREAMS.match(str(sc.get("name", "")))) else 1)
    settings = EncodeSettings(
        codec="idle" if idle else _LEGACY_ENCODERS.get(enc, _name(enc, "libx264")),
        preset=None if idle else _name(str(sc.get("preset") or "veryfast"), "veryfast"),
        bitrate_kbps=None if idle else kbps, width=0 if idle else w, height=0 if idle else h,
        fps=float(sc.get("fps", 30)), duration_s=float(sc.get("duration", end - start)),
        streams=streams, source="lavfi:testsrc")
    sid = "legacy-" + hashlib.sha256(
        f"{start}|{end}|{sc.get('name', '')}".encode()).hexdigest()[:16]
    vmaf = sc.get("vmaf_score")
    rec = DatasetRecord(
        scenario_id=sid, origin="legacy", origin_ref=f"{name}#{i}", host=_name(host, "legacy"),
        settings=settings, hardware=hardware, clip="testsrc", wall_s=end - start,
        vmaf=float(vmaf) if vmaf is not None else None,
        vmaf_model="unknown (legacy)" if vmaf is not None else "",
        psnr_y=float(sc["psnr_score"]) if sc.get("psnr_score") is not None else None)
    prev = sc.get(ENRICH_KEY)
    if isinstance(prev, dict) and prev.get("energy_j") is not None:
        rec = rec.model_copy(update={
            "energy_j": float(prev["energy_j"]), "energy_basis": prev["basis"],
            "energy_source": prev["source"], "energy_complete": bool(prev["complete"]),
            "energy_coverage": float(prev["coverage"]),
            "mean_power_w": float(prev["mean_power_w"])})
    return LegacyScenario(i, rec, start, end)


# ---------------------------------------------------------------------------------------
# Prometheus enrichment
# ---------------------------------------------------------------------------------------

#: package zones only: anchored regex, so package_0 and package_1 but never package_0_core
PACKAGE_ZONES = 'zone=~"package_[0-9]+"'
ENERGY_METRIC = "rapl_energy_joules_total"
POWER_METRIC = "rapl_power_watts"


@dataclass(frozen=True)
class WindowEnergy:
    energy_j: float
    zones_j: dict[str, float]
    coverage: float  # fraction of expected step points present (worst zone)
    complete: bool
    source: str
    query: str


def _coverage(ts_pts: list[tuple[float, float]] | None, pts: list[tuple[float, float]],
              start_s: float, end_s: float, step_s: float) -> tuple[float, bool] | None:
    """(coverage, complete) of one zone, or None when no real sample lies in the window.

    ``ts_pts`` are the query_range points of ``timestamp(metric)``: the time of the real
    sample behind each step point.  Prometheus repeats the last sample for up to 5 minutes
    (lookback), so presence of points alone would call a window whose data stopped
    "covered"; the real sample times show where the data really ends."""
    expected = math.floor((end_s - start_s) / step_s + 1e-9) + 1
    if ts_pts is None:
        c = len(pts) / expected if expected else 0.0
        return (c, c >= 0.999) if pts else None
    real = sorted({ts for _t, ts in ts_pts})
    if not real or real[-1] < start_s - 1e-6:
        return None  # only stale repeats of a sample from before the window
    spacing = sorted(b - a for a, b in itertools.pairwise(real)) or [step_s]
    max_age = max(15.0, 3 * spacing[len(spacing) // 2])
    first, last = real[0], real[-1]
    lo = start_s if first <= start_s + max_age else first
    hi = end_s if end_s - last <= max_age else last
    if hi <= lo:
        return None  # the data stops at (or before) the window's start
    wall = max(end_s - start_s, 1e-9)
    cov = min(1.0, (hi - lo) / wall)
    return cov, lo == start_s and hi == end_s


def energy_from_counter_series(series: dict[str, list[tuple[float, float]]], start_s: float,
                               end_s: float, step_s: float,
                               sample_ts: dict[str, list[tuple[float, float]]] | None = None,
                               ) -> WindowEnergy | None:
    """Energy over [start, end] from query_range results of a cumulative joule counter,
    one series per zone.  Increments are summed with Prometheus' counter-reset rule (a
    drop means the counter restarted from 0).  ``sample_ts`` (query_range of
    ``timestamp(...)``) tells real samples from lookback repeats.  Pure."""
    zones: dict[str, float] = {}
    cov, complete = 1.0, True
    for zone, pts in series.items():
        pts = sorted(p for p in pts if start_s - 1e-6 <= p[0] <= end_s + 1e-6)
        c = _coverage(sample_ts.get(zone, []) if sample_ts is not None else None, pts,
                      start_s, end_s, step_s)
        if c is None:
            continue
        zones[zone] = sum(b - a if b >= a else b for (_, a), (_, b) in itertools.pairwise(pts))
        cov, complete = min(cov, c[0]), complete and c[1]
    if not zones:
        return None
    return WindowEnergy(sum(zones.values()), zones, cov, complete,
                        f"prometheus:{ENERGY_METRIC}", "")


def energy_from_power_series(series: dict[str, list[tuple[float, float]]], start_s: float,
                             end_s: float, step_s: float,
                             sample_ts: dict[str, list[tuple[float, float]]] | None = None,
                             ) -> WindowEnergy | None:
    """Fallback when the exporter had no energy counter: trapezoid over the power gauge."""
    if not series:
        return None
    zones: dict[str, float] = {}
    cov = 1.0
    complete = True
    for zone, pts in series.items():
        pts = sorted(p for p in pts if start_s - 1e-6 <= p[0] <= end_s + 1e-6)
        c = _coverage(sample_ts.get(zone, []) if sample_ts is not None else None, pts,
                      start_s, end_s, step_s)
        if c is None:
            continue
        zones[zone] = sum((t2 - t1) * (a + b) / 2 for (t1, a), (t2, b)
                          in itertools.pairwise(pts))
        cov, complete = min(cov, c[0]), complete and c[1]
    if not zones:
        return None
    return WindowEnergy(sum(zones.values()), zones, cov, complete,
                        f"prometheus:{POWER_METRIC} (integrated)", "")


class PromClient:
    """Thin httpx adapter for ``/api/v1/query_range``."""

    def __init__(self, url: str, selector: str = "", timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.selector = selector  # extra label matchers, e.g. instance="host:9500"
        self.http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def query_range(self, query: str, start_s: float, end_s: float, step_s: float
                    ) -> dict[str, list[tuple[float, float]]]:
        r = self.http.get(f"{self.url}/api/v1/query_range", params={
            "query": query, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}",
            "step": f"{step_s:g}"})
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus: {body.get('error', body)}")
        out: dict[str, list[tuple[float, float]]] = {}
        for s in body["data"]["result"]:
            labels = s["metric"]
            zone = labels.get("zone", "?")
            inst = labels.get("instance")
            key = f"{inst}/{zone}" if inst else zone
            out[key] = [(float(t), float(v)) for t, v in s["values"]]
        return out

    def window_energy(self, start_s: float, end_s: float) -> WindowEnergy | None:
        """Package energy over the window: the joule counter if the exporter had one,
        else the integrated power gauge (the later Go exporter exported only watts)."""
        step = step_for(end_s - start_s)
        sel = PACKAGE_ZONES + (f",{self.selector}" if self.selector else "")
        for metric, fn in ((ENERGY_METRIC, energy_from_counter_series),
                           (POWER_METRIC, energy_from_power_series)):
            q = f"{metric}{{{sel}}}"
            series = self.query_range(q, start_s, end_s, step)
            if not series:
                continue
            ts = self.query_range(f"timestamp({q})", start_s, end_s, step)
            we = fn(series, start_s, end_s, step, ts)
            if we is not None:
                return WindowEnergy(we.energy_j, we.zones_j, we.coverage, we.complete,
                                    we.source, q)
        return None


def step_for(window_s: float) -> float:
    """About 500 points per window, at least 1 s (Prometheus caps at 11 000 points)."""
    return max(1.0, math.ceil(window_s / 500))


def enrich(scenario: LegacyScenario, we: WindowEnergy | None) -> DatasetRecord:
    """Attach the window's energy to a legacy record (pure)."""
    rec = scenario.record
    if we is None:
        return rec
    wall = scenario.end_s - scenario.start_s
    return rec.model_copy(update={
        "energy_j": we.energy_j, "energy_basis": "measured", "energy_source": we.source,
        "energy_scope": "component", "energy_complete": we.complete,
        "energy_coverage": min(1.0, we.coverage), "mean_power_w": we.energy_j / wall})


def write_back(doc_text: str, enriched: dict[int, tuple[DatasetRecord, WindowEnergy]]) -> str:
    """The original results JSON with ``joulestream_energy`` added to enriched scenarios."""
    doc = json.loads(doc_text)
    for i, (rec, we) in enriched.items():
        doc["scenarios"][i][ENRICH_KEY] = {
            "energy_j": rec.energy_j, "basis": rec.energy_basis, "source": rec.energy_source,
            "scope": rec.energy_scope, "zones_j": we.zones_j, "coverage": rec.energy_coverage,
            "complete": rec.energy_complete, "mean_power_w": rec.mean_power_w,
            "query": we.query, "scenario_id": rec.scenario_id}
    return json.dumps(doc, indent=2)
