"""Trainer subcommands: dataset status, import, train, models, predict, advise, advisor-api."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .api import AdvisorService, make_server
from .app import TrainerConfig, train_and_register
from .importers import (
    ImportResult,
    PromClient,
    RowError,
    enrich,
    parse_legacy,
    parse_measurements,
    write_back,
)
from .model import NotEnoughData
from .store import DatasetStore


def _data_dir(a: argparse.Namespace) -> str:
    return a.data_dir or TrainerConfig().data_dir


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="trainer data directory (default: "
                   "$JOULESTREAM_TRAINER_DATA_DIR or joulestream-data/trainer)")


def cmd_dataset_status(a: argparse.Namespace) -> int:
    svc = AdvisorService(_data_dir(a))
    st = svc.store.status()
    if a.json:
        print(json.dumps({**st.as_dict(), "snapshots": svc.store.snapshots()}, indent=2))
        return 0
    print(f"dataset {svc.store.path}")
    print(f"  complete   {st.complete:6d}   (trainable)")
    print(f"  waiting    {st.waiting:6d}")
    print(f"  incomplete {st.incomplete:6d}")
    for why, n in sorted(st.reasons.items(), key=lambda kv: -kv[1]):
        print(f"    {n:6d}  {why}")
    print("  by origin: " + ", ".join(f"{k} {v}" for k, v in sorted(st.by_origin.items())))
    return 0


def detect_format(path: str, text: str) -> str:
    if path.endswith(".jsonl") or path.endswith(".ndjson"):
        return "jsonl"
    if path.endswith(".csv"):
        return "csv"
    stripped = text.lstrip()
    if stripped.startswith("{") and '"scenarios"' in text[:100_000]:
        return "legacy"
    return "jsonl" if stripped.startswith("{") else "csv"


def import_file(store: DatasetStore, path: str, fmt: str = "auto", prometheus: str | None = None,
                selector: str = "", host: str = "legacy", write_json: str | None = None,
                now_ns: int = 0) -> tuple[dict[str, Any], list[RowError]]:
    """Import one file into the store; returns (summary, per-line errors)."""
    text = Path(path).read_text()
    fmt = detect_format(path, text) if fmt == "auto" else fmt
    name = Path(path).name
    if fmt in ("csv", "jsonl"):
        res: ImportResult = parse_measurements(text, fmt, name)
        for r in res.records:
            store.put_record(r, now_ns)
        return {"format": fmt, "imported": len(res.records), "rejected": len(res.errors)}, \
            res.errors
    scenarios, errors = parse_legacy(text, name, host)
    enriched: dict[int, Any] = {}
    no_data = 0
    client = PromClient(prometheus, selector) if prometheus else None
    try:
        for sc in scenarios:
            rec = sc.record
            if client is not None and rec.energy_j is None and not rec.settings.is_idle:
                we = client.window_energy(sc.start_s, sc.end_s)
                if we is None:
                    no_data += 1
                    errors.append(RowError(sc.index + 1, f"scenario #{sc.index}: Prometheus has "
                                           "no package energy for its window (retention?)"))
                else:
                    rec = enrich(sc, we)
                    enriched[sc.index] = (rec, we)
            store.put_record(rec, now_ns)
    finally:
        if client is not None:
            client.close()
    if write_json:
        Path(write_json).write_text(write_back(text, enriched))
    return {"format": "legacy", "imported": len(scenarios), "enriched": len(enriched),
            "no_prometheus_data": no_data, "rejected": len(errors) - no_data,
            "written": write_json}, errors


def cmd_import(a: argparse.Namespace) -> int:
    store = DatasetStore(Path(_data_dir(a)) / "dataset.sqlite")
    summary, errors = import_file(store, a.file, a.format, a.prometheus, a.prom_selector or "",
                                  a.host, a.write_json, time.time_ns())
    for e in errors:
        print(f"{a.file}: {e}", file=sys.stderr)
    print(json.dumps(summary))
    st = store.status()
    print(f"dataset now: {st.complete} complete, {st.waiting} waiting, "
          f"{st.incomplete} incomplete")
    return 1 if errors else 0


def cmd_train(a: argparse.Namespace) -> int:
    d = _data_dir(a)
    svc = AdvisorService(d)
    try:
        metas, skipped = train_and_register(svc.store, svc.registry, a.min_records,
                                            time.time_ns())
    except NotEnoughData as e:
        print(f"not training: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"models": metas, "skipped": skipped}, indent=2))
        return 0
    print(f"snapshot {metas[0]['snapshot_id']}: {metas[0]['n_samples']} records")
    print(f"{'model':42s} {'algorithm':18s} {'n':>5s} {'CV MAE':>10s} {'MAPE':>7s} "
          f"{'linear MAPE':>11s} {'PI90 cover':>10s}  grouping")
    for m in metas:
        iv = m.get("interval") or {}
        cov = iv.get("measured_coverage")
        base = m.get("baseline_cv") or {}
        print(f"{m['model_id']:42s} {m['algorithm']:18s} {m['n_samples']:5d} "
              f"{m['cv']['mae']:10.4g} {m['cv']['mape']:7.1%} "
              f"{base.get('mape', float('nan')):11.1%} "
              f"{(f'{cov:.0%}' if cov is not None else 'n/a'):>10s}  {m['cv']['grouping']}")
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    print(json.dumps(AdvisorService(_data_dir(a)).models(), indent=2))
    return 0


def _hw_params(a: argparse.Namespace) -> dict[str, Any]:
    return {"cpu_model": a.cpu_model, "logical_cpus": a.logical_cpus}


def cmd_predict(a: argparse.Namespace) -> int:
    svc = AdvisorService(_data_dir(a))
    out = svc.predict({"codec": a.codec, "preset": a.preset, "resolution": a.resolution,
                       "fps": a.fps, "crf": a.crf, "bitrate_kbps": a.bitrate,
                       "threads": a.threads, "streams": a.streams, **_hw_params(a)})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"settings: {out['settings']}")
    for t, p in out["predicted"].items():
        if p is None:
            print(f"  {t:24s} no model")
            continue
        lo, hi = p["interval"]
        iv = (f"[{lo:.4g}, {hi:.4g}] ({p['interval_level']:.0%} conformal, measured coverage "
              f"{p['interval_measured_coverage']:.0%})" if lo is not None
              and p["interval_measured_coverage"] is not None else "(no interval: too few records)")
        print(f"  {t:24s} {p['value']:10.4g} {p['unit']:9s} predicted {iv}  {p['model_id']}")
    if out["measured"]:
        m = out["measured"]
        print(f"  measured ({m['runs']} runs, energy {'/'.join(m['energy_basis'])}): "
              f"{m['energy_j_per_content_s']:.4g} J/s, VMAF {m['vmaf']}")
    if out.get("note"):
        print(out["note"])
    return 0


def cmd_advise(a: argparse.Namespace) -> int:
    svc = AdvisorService(_data_dir(a))
    out = svc.advise({"min_vmaf": a.min_vmaf, "resolution": a.resolution, "fps": a.fps,
                      "objective": a.objective, "conservative": int(a.conservative),
                      "top": a.top, "clip": a.clip, **_hw_params(a)})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    unit = {"energy": "J/s", "cost": "money/s", "carbon": "gCO2e/s"}[a.objective]
    print(f"settings reaching VMAF >= {a.min_vmaf} at {a.resolution}, by {a.objective} "
          f"({unit} of content):")
    for i, o in enumerate(out["ranked"], 1):
        s = o["settings"]
        rate = f"crf {s['crf']:g}" if s["crf"] is not None else f"{s['bitrate_kbps']:g} kbit/s"
        vi = o["intervals"].get("vmaf")
        vtxt = f"{o['vmaf']:.1f}" + (f" [{vi[0]:.1f},{vi[1]:.1f}]" if vi and vi[0] is not None
                                     else "")
        print(f" {i:2d}. {o['source']:9s} {s['codec']}/{s['preset']} {rate:16s} "
              f"{a.objective}={o['objective_value']:.4g}  VMAF {vtxt}  energy basis "
              f"{o['energy_basis']}" + (f"  ({o['runs']} runs)" if o["runs"] else ""))
    print("pareto front (energy ↓, VMAF ↑, bitrate ↓):")
    for o in out["pareto"]:
        s = o["settings"]
        rate = f"crf {s['crf']:g}" if s["crf"] is not None else f"{s['bitrate_kbps']:g} kbit/s"
        br = f"{o['bitrate_kbps']:.0f}" if o["bitrate_kbps"] is not None else "?"
        print(f"   {o['source']:9s} {s['codec']}/{s['preset']} {rate:16s} output {br} kbit/s "
              f"energy {o['energy_j_per_content_s']:.4g} J/s  VMAF {o['vmaf']:.1f}")
    for b in out["bd_rates"]:
        if "error" in b:
            print(f"BD-rate {b['test']} vs {b['anchor']}: {b['error']}")
        else:
            print(f"BD-rate (VMAF) {b['test']} vs {b['anchor']}: {b['bd_rate_pct']:+.1f} % "
                  f"(PCHIP {b['bd_rate_pchip_pct']:+.1f} %)")
    for n in out["notes"]:
        print(f"note: {n}")
    return 0


def cmd_api(a: argparse.Namespace) -> int:
    svc = AdvisorService(_data_dir(a))
    srv = make_server(svc, a.host, a.port)
    print(f"advisor API on http://{a.host}:{srv.server_address[1]} "
          "(/v1/predict, /v1/advise, /v1/models, /v1/dataset)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def register(sub: Any) -> None:
    ds = sub.add_parser("dataset", help="the trainer's dataset")
    dsub = ds.add_subparsers(dest="dataset_cmd", required=True)
    st = dsub.add_parser("status", help="complete / waiting / incomplete records and why")
    _add_data_dir(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_dataset_status)

    im = sub.add_parser("import", help="import measurements (CSV/JSONL, docs/trainer.md) or "
                        "the previous project's results JSON (enriched from Prometheus)")
    im.add_argument("file")
    im.add_argument("--format", choices=["auto", "csv", "jsonl", "legacy"], default="auto")
    im.add_argument("--prometheus", help="Prometheus URL for legacy energy enrichment")
    im.add_argument("--prom-selector", help='extra label matchers, e.g. instance="h:9500"')
    im.add_argument("--host", default="legacy", help="host name for legacy scenarios")
    im.add_argument("--write-json", help="legacy: also write the enriched results JSON here")
    _add_data_dir(im)
    im.set_defaults(fn=cmd_import)

    tr = sub.add_parser("train", help="train and register models from the dataset now")
    tr.add_argument("--min-records", type=int, default=4)
    tr.add_argument("--json", action="store_true")
    _add_data_dir(tr)
    tr.set_defaults(fn=cmd_train)

    mo = sub.add_parser("models", help="list registered models (JSON)")
    _add_data_dir(mo)
    mo.set_defaults(fn=cmd_models)

    def hw(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cpu-model", help="predict for this CPU (default: this host)")
        p.add_argument("--logical-cpus", type=int)
        p.add_argument("--json", action="store_true")
        _add_data_dir(p)

    pr = sub.add_parser("predict", help="settings → energy, power, VMAF, speed with intervals")
    pr.add_argument("--codec", default="libx264")
    pr.add_argument("--preset")
    pr.add_argument("--resolution", default="1920x1080")
    pr.add_argument("--fps", type=float, default=30.0)
    g = pr.add_mutually_exclusive_group(required=True)
    g.add_argument("--crf", type=float)
    g.add_argument("--bitrate", type=float, help="target kbit/s")
    pr.add_argument("--threads", type=int, default=0)
    pr.add_argument("--streams", type=int, default=1)
    hw(pr)
    pr.set_defaults(fn=cmd_predict)

    ad = sub.add_parser("advise", help="settings that reach a VMAF target for the least "
                        "energy / cost / carbon, Pareto front, BD-rate")
    ad.add_argument("--min-vmaf", type=float, default=93.0)
    ad.add_argument("--resolution", default="1920x1080")
    ad.add_argument("--fps", type=float)
    ad.add_argument("--objective", choices=["energy", "cost", "carbon"], default="energy")
    ad.add_argument("--conservative", action="store_true",
                    help="predicted options must meet the target with their VMAF lower bound")
    ad.add_argument("--top", type=int, default=10)
    ad.add_argument("--clip", help="only measurements of this source clip")
    hw(ad)
    ad.set_defaults(fn=cmd_advise)

    api = sub.add_parser("advisor-api", help="HTTP API for predict/advise (docs/trainer.md)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8095)
    _add_data_dir(api)
    api.set_defaults(fn=cmd_api)
