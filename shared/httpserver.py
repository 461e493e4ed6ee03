"""Per-service HTTP endpoint: ``/metrics`` (Prometheus exposition) and ``/healthz``.

A threaded WSGI server so a slow scrape never blocks the service's event loop; the health
check reads a plain attribute that the service loop updates.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Health:
    """Readiness state of a service: ``ready`` plus a reason a person can read."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"
        self.details: dict[str, Any] = {}

    def set(self, ready: bool, reason: str, **details: Any) -> None:
        self.ready, self.reason = ready, reason
        self.details.update(details)

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "reason": self.reason, **self.details}


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` for one service until ``stop()``."""

    def __init__(
        self, registry: CollectorRegistry, health: Health, port: int = 0, addr: str = "0.0.0.0"
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path in ("/healthz", "/readyz"):
                body = json.dumps(health.as_dict(), default=str).encode()
                status = "200 OK" if health.ready else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [body]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        self._server = make_server(addr, port, app, server_class=_Server, handler_class=_Quiet)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
