"""Advice: which settings reach a quality target for the least energy (or cost, or carbon).

Pure functions over dataset records plus a :class:`Predictor` (models from the registry).
Every option says whether its figures were **measured** (averaged over the runs of that
exact settings family at the requested resolution) or **predicted** (by which model, with
its conformal interval).  Measurements win wherever they exist.

BD-rate follows Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
ITU-T VCEG-M33 (2001): fit log10(bitrate) as a cubic polynomial of quality for each curve,
integrate both over the overlapping quality interval, and report the mean log-rate
difference as a percentage (10^Δ − 1).  Quality is VMAF instead of PSNR.  The piecewise
cubic (PCHIP) variant used by JCT-VC/AOM CTC is reported alongside.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy.interpolate import PchipInterpolator

from schemas.scenario_events import EncodeSettings, HardwareInfo

from .model import TARGETS, settings_family
from .records import DatasetRecord

try:  # the shared definitions, when present
    from shared.efficiency import quality_weighted_pixels_per_joule, vmaf_per_kj
except ImportError:  # pragma: no cover - older checkouts
    def vmaf_per_kj(vmaf: float | None, energy_j: float | None) -> float | None:
        return None if vmaf is None or not energy_j else vmaf / (energy_j / 1000)

    def quality_weighted_pixels_per_joule(pixels: float | None, vmaf: float | None,
                                          energy_j: float | None) -> float | None:
        return None if not pixels or vmaf is None or not energy_j else (
            pixels * vmaf / 100 / energy_j)

Objective = Literal["energy", "cost", "carbon"]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float | None = None
    high: float | None = None
    model_id: str | None = None


class Predictor(Protocol):
    def predict(self, target: str, settings: EncodeSettings,
                hardware: HardwareInfo | None) -> Estimate | None: ...


@dataclass
class Option:
    settings: dict[str, Any]
    source: Literal["measured", "predicted"]
    runs: int  # measured runs averaged (0 for predictions)
    energy_j_per_content_s: float
    energy_basis: str  # measured / estimated / "predicted from N measured + M estimated"
    mean_power_w: float | None
    vmaf: float
    bitrate_kbps: float | None
    encode_fps: float | None
    energy_j_per_frame: float | None
    vmaf_per_kj: float | None  # VMAF per kJ over one second of content
    quality_weighted_pixels_per_joule: float | None
    cost_per_content_s: float | None = None
    carbon_g_per_content_s: float | None = None
    intervals: dict[str, list[float | None]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    objective_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settings_key(s: EncodeSettings) -> dict[str, Any]:
    return {"codec": s.codec, "preset": s.preset, "rate_control": s.rate_control,
            "crf": s.crf, "bitrate_kbps": s.bitrate_kbps, "width": s.width, "height": s.height,
            "fps": s.fps, "streams": s.streams, "threads": s.threads}


def _mean(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.fmean(v) if v else None


def measured_options(records: list[DatasetRecord], width: int, height: int,
                     fps: float | None = None) -> list[Option]:
    """One option per settings family measured at this resolution (runs averaged)."""
    fam: dict[str, list[DatasetRecord]] = defaultdict(list)
    for r in records:
        s = r.settings
        if (s.width, s.height) != (width, height) or (fps and abs(s.fps - fps) > 0.01):
            continue
        if r.energy_j is None or r.vmaf is None or s.duration_s <= 0:
            continue
        fam[settings_family(s)].append(r)
    out = []
    for rs in fam.values():
        s = rs[0].settings
        e = statistics.fmean(r.energy_j / r.settings.duration_s for r in rs)  # type: ignore[operator]
        vmaf = statistics.fmean(r.vmaf for r in rs)  # type: ignore[misc]
        bases = sorted({r.energy_basis or "unknown" for r in rs})
        cost = _mean(r.cost_total / r.settings.duration_s if r.cost_total is not None else None
                     for r in rs)
        carbon = _mean(r.carbon_g / r.settings.duration_s if r.carbon_g is not None else None
                       for r in rs)
        out.append(_option(s, "measured", len(rs), e, "+".join(bases),
                           _mean(r.mean_power_w for r in rs), vmaf,
                           _mean(r.bitrate_kbps for r in rs), _mean(r.encode_fps for r in rs),
                           cost, carbon))
    return out


def _option(s: EncodeSettings, source: Literal["measured", "predicted"], runs: int,
            e_per_s: float, basis: str, power: float | None, vmaf: float,
            bitrate: float | None, fps_enc: float | None, cost: float | None,
            carbon: float | None) -> Option:
    pixels_per_s = s.width * s.height * (s.fps or 0) * s.streams
    return Option(
        settings=_settings_key(s), source=source, runs=runs, energy_j_per_content_s=e_per_s,
        energy_basis=basis, mean_power_w=power, vmaf=vmaf, bitrate_kbps=bitrate,
        encode_fps=fps_enc,
        energy_j_per_frame=e_per_s / (s.fps * s.streams) if s.fps else None,
        vmaf_per_kj=vmaf_per_kj(vmaf, e_per_s),
        quality_weighted_pixels_per_joule=quality_weighted_pixels_per_joule(
            pixels_per_s or None, vmaf, e_per_s),
        cost_per_content_s=cost, carbon_g_per_content_s=carbon)


def candidate_grid(records: list[DatasetRecord], width: int, height: int,
                   fps: float) -> list[EncodeSettings]:
    """Every (codec, preset, rate control value, threads) seen in the data, moved to the
    requested resolution and frame rate - the settings the models can speak about."""
    seen: dict[tuple[Any, ...], EncodeSettings] = {}
    for r in records:
        s = r.settings
        if s.is_idle:
            continue
        key = (s.codec, s.preset, s.crf, s.bitrate_kbps, s.threads)
        seen.setdefault(key, EncodeSettings(
            codec=s.codec, preset=s.preset, crf=s.crf, bitrate_kbps=s.bitrate_kbps,
            width=width, height=height, fps=fps, duration_s=10.0, streams=1,
            threads=s.threads))
    return list(seen.values())


def predicted_option(p: Predictor, s: EncodeSettings, hw: HardwareInfo | None,
                     cost_per_j: float | None, carbon_per_j: float | None) -> Option | None:
    est = {t: p.predict(t, s, hw) for t in TARGETS}
    e, v = est["energy_j_per_content_s"], est["vmaf"]
    if e is None or v is None:
        return None
    power, fps_enc = est["mean_power_w"], est["encode_fps"]
    opt = _option(s, "predicted", 0, e.value, "predicted", power.value if power else None,
                  v.value, s.bitrate_kbps, fps_enc.value if fps_enc else None,
                  e.value * cost_per_j if cost_per_j is not None else None,
                  e.value * carbon_per_j if carbon_per_j is not None else None)
    opt.intervals = {t: [x.low, x.high] for t, x in est.items() if x is not None}
    opt.models = {t: x.model_id or "" for t, x in est.items() if x is not None}
    return opt


def _ratio(records: list[DatasetRecord], attr: str) -> float | None:
    """Median money (or carbon) per joule over measured records that have it."""
    xs = [getattr(r, attr) / r.energy_j for r in records
          if getattr(r, attr) is not None and r.energy_j]
    return statistics.median(xs) if xs else None


def pareto_front(options: list[Option]) -> list[Option]:
    """Options no other option beats on all of: lower energy, higher VMAF, lower bitrate
    (an unknown bitrate counts as worst: it cannot be claimed)."""
    def vec(o: Option) -> tuple[float, float, float]:
        return (o.energy_j_per_content_s, -o.vmaf,
                o.bitrate_kbps if o.bitrate_kbps is not None else math.inf)
    front = []
    for o in options:
        a = vec(o)
        dominated = False
        for q in options:
            b = vec(q)
            if q is not o and all(x <= y for x, y in zip(b, a, strict=True)) and b != a:
                dominated = True
                break
        if not dominated:
            front.append(o)
    return sorted(front, key=lambda o: o.energy_j_per_content_s)


def objective_of(o: Option, objective: Objective) -> float | None:
    if objective == "energy":
        return o.energy_j_per_content_s
    if objective == "cost":
        return o.cost_per_content_s
    return o.carbon_g_per_content_s


@dataclass
class Advice:
    objective: str
    min_vmaf: float
    resolution: str
    ranked: list[Option]
    pareto: list[Option]
    bd_rates: list[dict[str, Any]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "min_vmaf": self.min_vmaf,
                "resolution": self.resolution,
                "ranked": [o.as_dict() for o in self.ranked],
                "pareto": [o.as_dict() for o in self.pareto],
                "bd_rates": self.bd_rates, "notes": self.notes}


def advise(records: list[DatasetRecord], predictor: Predictor | None, min_vmaf: float,
           width: int, height: int, fps: float | None = None,
           objective: Objective = "energy", hardware: HardwareInfo | None = None,
           conservative: bool = False, top: int = 10) -> Advice:
    """Rank settings meeting ``min_vmaf`` by the objective (lower is better).

    Measured options come first-class from the data; predictions fill settings the data
    has not measured at this resolution.  With ``conservative`` a predicted option must
    meet the target with the lower end of its VMAF interval."""
    notes: list[str] = []
    measured = measured_options(records, width, height, fps)
    fps_eff = fps or (measured[0].settings["fps"] if measured else None) or 30.0
    options = list(measured)
    if predictor is not None:
        have = {settings_family(EncodeSettings(**{k: v for k, v in o.settings.items()
                                                  if k != "rate_control"}))
                for o in measured}
        cpj, gpj = _ratio(records, "cost_total"), _ratio(records, "carbon_g")
        for s in candidate_grid(records, width, height, fps_eff):
            if settings_family(s) in have:
                continue
            opt = predicted_option(predictor, s, hardware, cpj, gpj)
            if opt is not None:
                options.append(opt)
        if objective != "energy":
            notes.append(f"predicted {objective} = predicted energy × median {objective} per "
                         "joule of the measured records")
    else:
        notes.append("no trained models: measured options only")
    for o in options:
        o.objective_value = objective_of(o, objective)

    def meets(o: Option) -> bool:
        if conservative and o.source == "predicted":
            lo = o.intervals.get("vmaf", [None])[0]
            return lo is not None and lo >= min_vmaf
        return o.vmaf >= min_vmaf
    ok = [o for o in options if meets(o) and o.objective_value is not None]
    missing = [o for o in options if meets(o) and o.objective_value is None]
    if missing:
        notes.append(f"{len(missing)} options meet the target but have no {objective} figure")
    ok.sort(key=lambda o: (o.objective_value, o.source != "measured", -o.vmaf))
    if not ok:
        notes.append(f"no option reaches VMAF {min_vmaf} at {width}x{height}")
    return Advice(objective, min_vmaf, f"{width}x{height}", ok[:top], pareto_front(options),
                  bd_rates_between_encoders(measured), notes)


# ---------------------------------------------------------------------------------------
# BD-rate
# ---------------------------------------------------------------------------------------


def bd_rate(rate_a: list[float], q_a: list[float], rate_b: list[float], q_b: list[float],
            method: Literal["cubic", "pchip"] = "cubic") -> float:
    """Average bitrate difference of curve B against anchor A at equal quality, percent
    (negative: B needs fewer bits).  Needs >= 4 points per curve and overlapping quality."""
    if len(rate_a) < 4 or len(rate_b) < 4:
        raise ValueError("BD-rate needs at least 4 rate points per curve")
    la, lb = np.log10(rate_a), np.log10(rate_b)
    qa, qb = np.asarray(q_a, float), np.asarray(q_b, float)
    lo, hi = max(qa.min(), qb.min()), min(qa.max(), qb.max())
    if hi <= lo:
        raise ValueError("the curves' quality ranges do not overlap")
    if method == "cubic":
        pa, pb = np.polyint(np.polyfit(qa, la, 3)), np.polyint(np.polyfit(qb, lb, 3))
        ia = np.polyval(pa, hi) - np.polyval(pa, lo)
        ib = np.polyval(pb, hi) - np.polyval(pb, lo)
    else:
        oa, ob = np.argsort(qa), np.argsort(qb)
        fa = PchipInterpolator(qa[oa], la[oa])
        fb = PchipInterpolator(qb[ob], lb[ob])
        ia, ib = fa.integrate(lo, hi), fb.integrate(lo, hi)
    avg = (ib - ia) / (hi - lo)
    return float((10 ** avg - 1) * 100)


def bd_rates_between_encoders(measured: list[Option]) -> list[dict[str, Any]]:
    """BD-rate (VMAF) of each (codec, preset) curve against the anchor curve of another
    codec - the anchor is the curve with the most points (ties: name order)."""
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for o in measured:
        if o.bitrate_kbps:
            curves[f"{o.settings['codec']}/{o.settings['preset']}"].append(
                (o.bitrate_kbps, o.vmaf))
    usable = {k: sorted(v) for k, v in curves.items() if len(v) >= 4}
    out: list[dict[str, Any]] = []
    if len(usable) < 2:
        return out
    anchor = sorted(usable, key=lambda k: (-len(usable[k]), k))[0]
    ra, qa = zip(*usable[anchor], strict=True)
    for name, pts in sorted(usable.items()):
        if name == anchor or name.split("/")[0] == anchor.split("/")[0]:
            continue
        rb, qb = zip(*pts, strict=True)
        row: dict[str, Any] = {"anchor": anchor, "test": name, "quality": "vmaf",
                               "points": [len(ra), len(rb)]}
        try:
            row["bd_rate_pct"] = bd_rate(list(ra), list(qa), list(rb), list(qb), "cubic")
            row["bd_rate_pchip_pct"] = bd_rate(list(ra), list(qa), list(rb), list(qb), "pchip")
        except ValueError as e:
            row["error"] = str(e)
        out.append(row)
    return out
