"""Smart plugs over MQTT against a real Mosquitto: Tasmota end to end (MQTT → collector →
power.samples on the broker), Shelly Gen2 and the generic form at the source level."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from schemas.power_samples import TOPIC, PowerSamples
from services.power_collector.app import run_collector
from services.power_collector.config import CollectorConfig
from services.power_collector.mqtt import MqttPlug
from services.power_collector.sources import Reading
from shared.broker import free_port
from shared.httpserver import Health
from shared.kafka import StopSignal, make_consumer
from shared.settings import KafkaSettings

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Mosquitto on a free loopback port; yields the port."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest stderr\n")
    log = open(d / "mosquitto.log", "wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {(d / 'mosquitto.log').read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def _publish(port: int, topic: str, payloads: list[object], gap_s: float = 0.05) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        for p in payloads:
            await c.publish(topic, json.dumps(p) if not isinstance(p, bytes) else p, qos=1)
            await asyncio.sleep(gap_s)


def _tasmota(total_kwh: float, power_w: float) -> dict[str, object]:
    return {"Time": "2024-05-01T12:00:00", "ENERGY": {
        "TotalStartTime": "2024-01-01T00:00:00", "Total": total_kwh, "Yesterday": 0.5,
        "Today": 0.2, "Period": 1, "Power": power_w, "ApparentPower": power_w + 3,
        "ReactivePower": 10, "Factor": 0.95, "Voltage": 231, "Current": 0.44}}


async def test_tasmota_plug_end_to_end_to_power_samples(mosquitto: int,
                                                        kafka: KafkaSettings) -> None:
    cfg = CollectorConfig(source="mqtt", mqtt_host="127.0.0.1", mqtt_port=mosquitto,
                          mqtt_format="tasmota", mqtt_device="tasmota_5A3F01")
    reg, stop = CollectorRegistry(), StopSignal()
    task = asyncio.ensure_future(run_collector(cfg, kafka, reg, Health(), stop, "hostA"))
    topic = "tele/tasmota_5A3F01/SENSOR"

    def delivered() -> float:
        return reg.get_sample_value("joulestream_power_collector_published_samples_total") or 0

    # the plug repeats its counter until the collector is subscribed and delivering
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while delivered() == 0 and loop.time() < deadline:
        await _publish(mosquitto, topic, [_tasmota(12.000, 100)], gap_s=0.2)
    assert delivered() > 0
    await _publish(mosquitto, topic, [
        _tasmota(12.001, 110),  # +1 Wh
        b'{"Time":"2024-05-01T12:00:10","DS18B20":{"Temperature":24.1}}',  # not a meter
        _tasmota(12.003, 140),  # +2 Wh
        _tasmota(12.004, 90),  # +1 Wh
    ], gap_s=0.1)
    await asyncio.sleep(0.5)
    stop.set()
    (col,) = await asyncio.wait_for(task, 30)
    assert reg.get_sample_value("joulestream_power_collector_read_errors_total") == 1

    c = make_consumer(kafka, None, [kafka.topic(TOPIC)])
    await c.start()
    msgs: list[PowerSamples] = []
    try:
        while sum(len(m.samples) for m in msgs) < col.seq:
            batch = await c.getmany(timeout_ms=500)
            if not batch:
                break
            msgs += [PowerSamples.from_bytes(r.value) for recs in batch.values() for r in recs]
    finally:
        await c.stop()
    samples = [s for m in msgs for s in m.samples]
    assert [s.seq for s in samples] == list(range(col.seq))
    (zone,) = msgs[0].zones
    assert (zone.name, zone.kind, zone.scope, zone.basis, zone.source, zone.in_total) == (
        "plug:tasmota_5A3F01", "wall", "wall", "measured", "mqtt_plug", True)
    energies = [s.energy_j["plug:tasmota_5A3F01"] for s in samples]
    # the plug's own counter: 4 Wh after the repeated 12.000 kWh reports
    assert energies[-1] == pytest.approx(4 * 3600.0, abs=1e-6)
    assert energies[-4:-1] == pytest.approx([0.0, 3600.0, 3 * 3600.0], abs=1e-6)
    assert all(b >= a for a, b in itertools.pairwise(energies))


async def _run_plug(plug: MqttPlug, port: int, topic: str,
                    payloads: list[object]) -> list[Reading]:
    got: list[Reading] = []
    bad: list[str] = []
    subscribed = asyncio.Event()
    task = asyncio.ensure_future(plug.run(lambda r, _m: got.append(r), bad.append, subscribed))
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        await _publish(port, topic, payloads)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        # counters of the plug, not an event: poll them
        while (plug.messages + plug.bad_messages < len(payloads)  # noqa: ASYNC110
               and loop.time() < deadline):
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return got


async def test_shelly_gen2_notifications(mosquitto: int) -> None:
    cfg = CollectorConfig(source="mqtt", mqtt_host="127.0.0.1", mqtt_port=mosquitto,
                          mqtt_format="shelly", mqtt_device="shellyplusplugs-a8032ab1")
    plug = MqttPlug(cfg)
    await plug.check()

    def status(sw: dict[str, object]) -> dict[str, object]:
        return {"src": "shellyplusplugs-a8032ab1", "dst": "shellyplusplugs-a8032ab1/events",
                "method": "NotifyStatus", "params": {"ts": 1714564800.1, "switch:0": sw}}

    got = await _run_plug(plug, mosquitto, "shellyplusplugs-a8032ab1/events/rpc", [
        status({"id": 0, "apower": 50.0, "aenergy": {"total": 1000.0, "by_minute": [0, 0, 0],
                                                      "minute_ts": 1714564800}}),
        status({"id": 0, "aenergy": {"total": 1000.5, "by_minute": [500, 0, 0],
                                     "minute_ts": 1714564860}}),
        {"src": "x", "method": "NotifyEvent", "params": {"events": [{"event": "btn_down"}]}},
        status({"id": 0, "aenergy": {"total": 1001.0, "by_minute": [500, 500, 0],
                                     "minute_ts": 1714564920}}),
    ])
    assert [r.energy_j[plug.zone] for r in got] == pytest.approx([0.0, 1800.0, 3600.0])
    assert plug.bad_messages == 0 and plug.meter.counter_updates == 2


async def test_generic_json_plug_integrates_power_without_counter(mosquitto: int) -> None:
    cfg = CollectorConfig(source="mqtt", mqtt_host="127.0.0.1", mqtt_port=mosquitto,
                          mqtt_format="generic", mqtt_device="rack1", mqtt_topic="lab/rack1",
                          mqtt_power_path="sensors.0.watts")
    plug = MqttPlug(cfg)
    got = await _run_plug(plug, mosquitto, "lab/rack1", [
        {"sensors": [{"watts": 200.0}]}, {"sensors": [{"watts": 200.0}]},
        {"sensors": [{"volts": 230}]},  # not in the configured form: skipped, counted
        {"sensors": [{"watts": 200.0}]},
    ])
    assert plug.bad_messages == 1 and len(got) == 3
    # 200 W integrated over the real receive times of the three reports
    assert got[-1].energy_j[plug.zone] > 0
    assert plug.meter.power_intervals == 2 and plug.meter.counter_updates == 0
    p = got[-1].power_w[plug.zone]
    assert p == pytest.approx(200.0)
