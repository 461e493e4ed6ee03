"""Report rendering: rows from pipeline results, a text table, and an HTML page.

Only values the pipeline computed are shown; a missing value is shown as "—", never 0.
"""

from __future__ import annotations

import html
from typing import Any

from schemas.cost_results import CostResult
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy

from .cost_worker.logic import vmaf_per_kj


def report_rows(energy: dict[str, ScenarioEnergy], quality: dict[str, QualityResult],
                cost: dict[str, CostResult], order: list[str]) -> list[dict[str, Any]]:
    rows = []
    for sid in order:
        e, q, c = energy.get(sid), quality.get(sid), cost.get(sid)
        if e is None:
            continue
        s = e.settings
        rows.append({
            "scenario_id": sid, "host": e.host, "codec": s.codec, "preset": s.preset,
            "width": s.width, "height": s.height, "fps": s.fps,
            "bitrate_kbps": s.bitrate_kbps, "crf": s.crf, "duration_s": s.duration_s,
            "streams": s.streams,
            "real_bitrate_kbps": (e.output_bytes * 8 / 1000 / s.duration_s / s.streams
                                  if e.output_bytes and s.duration_s else None),
            "wall_s": e.wall_s, "cpu_s": e.cpu_s, "frames": e.frames,
            "energy_j": e.energy_j,
            "energy_source": f"{e.basis}:{'+'.join(e.sources)}",
            "energy_basis": e.basis, "energy_sources": e.sources, "energy_scope": e.scope,
            "energy_complete": e.complete, "energy_coverage": e.coverage,
            "mean_power_w": e.mean_power_w, "peak_power_w": e.peak_power_w,
            "idle_power_w": e.idle_power_w, "dynamic_energy_j": e.dynamic_energy_j,
            "vmaf": q.vmaf if q else None, "vmaf_neg": q.vmaf_neg if q else None,
            "vmaf_model": q.vmaf_model if q else None,
            "psnr": q.psnr_y if q else None, "psnr_avg": q.psnr_avg if q else None,
            "ssim": q.ssim if q else None,
            "cost_total": c.total_cost if c else None,
            "cost_energy": c.energy_cost if c else None,
            "cost_compute": c.compute_cost if c else None,
            "currency": c.currency if c else None,
            "carbon_g": c.carbon_g if c else None,
            "vmaf_per_kj": vmaf_per_kj(q.vmaf, e.energy_j) if q else None,
        })
    return rows


def _f(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


COLUMNS = [
    ("preset", "preset", "s"), ("res", None, "s"), ("kbps", "bitrate_kbps", ".0f"),
    ("energy J", "energy_j", ".1f"), ("basis", "energy_source", "s"),
    ("W mean", "mean_power_w", ".2f"), ("VMAF", "vmaf", ".2f"), ("PSNR", "psnr", ".2f"),
    ("SSIM", "ssim", ".4f"), ("cost", "cost_total", ".3g"), ("VMAF/kJ", "vmaf_per_kj", ".1f"),
]


def _cells(r: dict[str, Any]) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        if key is None:
            out.append(f"{r['width']}x{r['height']}")
        elif fmt == "s":
            out.append(str(r[key]) if r[key] is not None else "—")
        else:
            out.append(_f(r[key], fmt))
    return out


def table_text(report: dict[str, Any]) -> str:
    rows = report["scenarios"]
    head = [c[0] for c in COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lines = []
    codecs = sorted({r["codec"] for r in rows})
    cur = rows[0]["currency"] if rows and rows[0]["currency"] else ""
    lines.append(f"Scenarios ({', '.join(codecs)}; cost in {cur}):")
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for b in body:
        lines.append("  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)))
    idle = report.get("idle_baseline")
    if idle:
        lines.append(f"Idle baseline: {idle['mean_power_w']:.2f} W ({idle['basis']}:"
                     f"{'+'.join(idle['sources'])}) over {idle['wall_s']:.1f} s")
    if rows and rows[0]["energy_basis"] == "estimated":
        lines.append("Energy is ESTIMATED from CPU time (no RAPL/NVML/plug readable on this "
                     "host); see docs/power.md for the model and its assumptions.")
    lines.append("Models (grouped cross-validation, folds hold out whole settings families):")
    for m in report["models"]:
        base = (f"; linear baseline MAE {m['baseline_cv_mae']:.3g}"
                if m.get("baseline_cv_mae") is not None else "")
        lines.append(f"  {m['target']:<24} {m['algorithm']:<18} n={m['n_samples']:<3} "
                     f"CV MAE {m['cv_mae']:.3g} {m['unit']}, MAPE {m['cv_mape']:.1%} "
                     f"({m['cv_folds']} folds){base}")
    if not report["models"]:
        lines.append(f"  none: {report.get('model_error')}")
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(c[0])}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
                   for r in report["scenarios"])
    models = "".join(
        f"<tr><td>{html.escape(m['target'])}</td><td>{html.escape(m['algorithm'])}</td>"
        f"<td>{m['n_samples']}</td><td>{m['cv_mae']:.4g} {html.escape(m['unit'])}</td>"
        f"<td>{m['cv_mape']:.1%}</td><td>{m['cv_folds']}</td></tr>" for m in report["models"])
    idle = report.get("idle_baseline")
    idle_html = (f"<p>Idle baseline: {idle['mean_power_w']:.2f} W ({html.escape(idle['basis'])})"
                 "</p>" if idle else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>joulestream report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>joulestream report</h1><p>Generated {html.escape(report['generated_at'])}
from {html.escape(report['source_clip'])}.</p>{idle_html}
<h2>Scenarios</h2><table><tr>{head}</tr>{body}</table>
<p>The <em>basis</em> column says whether energy was measured (RAPL, NVML, smart plug) or
estimated (CPU-time model), and from which source.</p>
<h2>Models</h2><table><tr><th>target</th><th>algorithm</th><th>n</th><th>CV MAE</th>
<th>CV MAPE</th><th>folds</th></tr>{models}</table></body></html>
"""
