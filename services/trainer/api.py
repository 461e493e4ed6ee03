"""Advisor service (shared by the CLI and the HTTP API) and a small stdlib HTTP server.

Endpoints (JSON responses; parameters as query string, or a JSON object body for POST):

* ``GET /healthz``
* ``GET|POST /v1/predict``  codec, preset, resolution (WxH), fps, crf | bitrate_kbps,
  threads, streams, duration_s; optional cpu_model + logical_cpus (default: this host)
* ``GET|POST /v1/advise``   min_vmaf, resolution, fps, objective (energy|cost|carbon),
  conservative (0/1), top, clip (only measurements of this source clip)
* ``GET /v1/models``        the registry's models with metadata
* ``GET /v1/dataset``       dataset status (complete / waiting / incomplete and why)

Errors: HTTP 400 with ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from schemas.scenario_events import EncodeSettings, HardwareInfo
from shared.hardware import host_hardware

from .advisor import advise
from .predictor import RegistryPredictor, predict_settings
from .records import hardware_class_of
from .registry import ModelRegistry
from .store import DatasetStore

log = logging.getLogger("trainer.api")


def parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"resolution {text!r} is not WIDTHxHEIGHT")
    return int(m.group(1)), int(m.group(2))


class AdvisorService:
    """Dataset + registry of one trainer data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        d = Path(data_dir)
        self.store = DatasetStore(d / "dataset.sqlite")
        self.registry = ModelRegistry(d / "models")
        self.predictor = RegistryPredictor(self.registry)
        self._lock = threading.Lock()  # sklearn models and sqlite handles: one at a time

    def close(self) -> None:
        self.store.close()
        self.registry.close()

    @staticmethod
    def hardware_from(p: dict[str, Any]) -> HardwareInfo:
        if p.get("cpu_model") or p.get("logical_cpus"):
            cpu = str(p.get("cpu_model") or "unknown")
            n = int(p.get("logical_cpus") or 1)
            arch = str(p.get("arch") or "unknown")
            return HardwareInfo(cpu_model=cpu, logical_cpus=n, arch=arch,
                                hardware_class=hardware_class_of(cpu, n, arch))
        return host_hardware()

    def predict(self, p: dict[str, Any]) -> dict[str, Any]:
        w, h = parse_resolution(p.get("resolution", "1920x1080"))
        crf = p.get("crf")
        br = p.get("bitrate_kbps")
        if crf in (None, "") and br in (None, ""):
            raise ValueError("give crf or bitrate_kbps")
        s = EncodeSettings(
            codec=str(p.get("codec", "libx264")), preset=p.get("preset") or None,
            crf=float(crf) if crf not in (None, "") else None,
            bitrate_kbps=float(br) if br not in (None, "") and crf in (None, "") else None,
            width=w, height=h, fps=float(p.get("fps", 30)),
            duration_s=float(p.get("duration_s", 10)), streams=int(p.get("streams", 1)),
            threads=int(p.get("threads", 0)))
        hw = self.hardware_from(p)
        with self._lock:
            out = predict_settings(self.predictor, s, hw, self.store.complete_records())
        out["hardware"] = hw.model_dump()
        if all(v is None for v in out["predicted"].values()):
            out["note"] = "no trained models yet: run `joulestream train` (see dataset status)"
        return out

    def advise(self, p: dict[str, Any]) -> dict[str, Any]:
        w, h = parse_resolution(p.get("resolution", "1920x1080"))
        objective = str(p.get("objective", "energy"))
        if objective not in ("energy", "cost", "carbon"):
            raise ValueError("objective must be energy, cost or carbon")
        fps = float(p["fps"]) if p.get("fps") not in (None, "") else None
        hw = self.hardware_from(p)
        clip = p.get("clip")
        with self._lock:
            has_models = bool(self.registry.list())
            recs = [r for r in self.store.complete_records() if not clip or r.clip == clip]
            a = advise(recs, self.predictor if has_models else None,
                       float(p.get("min_vmaf", 93)), w, h, fps, objective,  # type: ignore[arg-type]
                       hw, str(p.get("conservative", "0")).lower() in ("1", "true", "yes"),
                       int(p.get("top", 10)))
        return a.as_dict()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self.store.status().as_dict()

    def models(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.registry.list()


def make_server(svc: AdvisorService, host: str = "127.0.0.1", port: int = 8095
                ) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug(fmt, *args)

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body, indent=2, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, params: dict[str, Any]) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            try:
                if path == "/healthz":
                    self._send(200, {"ok": True})
                elif path == "/v1/predict":
                    self._send(200, svc.predict(params))
                elif path == "/v1/advise":
                    self._send(200, svc.advise(params))
                elif path == "/v1/models":
                    self._send(200, svc.models())
                elif path == "/v1/dataset":
                    self._send(200, svc.status())
                else:
                    self._send(404, {"error": f"no such endpoint {path}"})
            except (ValueError, ValidationError) as e:
                self._send(400, {"error": str(e)})

        def do_GET(self) -> None:
            self._route(dict(parse_qsl(urlsplit(self.path).query)))

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
            except json.JSONDecodeError as e:
                self._send(400, {"error": f"body is not JSON: {e.msg}"})
                return
            if not isinstance(body, dict):
                self._send(400, {"error": "body must be a JSON object"})
                return
            self._route(body)

    return ThreadingHTTPServer((host, port), Handler)
