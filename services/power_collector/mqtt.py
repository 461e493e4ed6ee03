"""Smart plugs over MQTT (aiomqtt): wall power, pushed by the plug.

Forms understood (``JOULESTREAM_COLLECTOR_MQTT_FORMAT``):

* ``tasmota`` — ``tele/<device>/SENSOR``: ``ENERGY.Power`` (W), ``ENERGY.Total`` (kWh);
* ``shelly`` — Gen2/Gen3 RPC notifications on ``<device>/events/rpc``: ``NotifyStatus`` with
  ``params.switch:0.apower`` (W) and ``params.switch:0.aenergy.total`` (Wh);
* ``generic`` — any JSON; dotted paths to power (W) and energy (J, Wh or kWh) configured.

Each report becomes one sample of the zone ``plug:<device>`` (kind ``wall``, scope ``wall``,
basis ``measured``, source ``mqtt_plug``), stamped with the time it was received.  Energy
comes from the plug's own counter when it reports one, else from integrated power
(``logic.PlugMeter``).  Messages in another form are skipped and counted, never turned
into zeros.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import aiomqtt

from schemas.power_samples import Zone

from .config import CollectorConfig
from .logic import (
    PlugMeter,
    PlugPayloadError,
    PlugReading,
    parse_generic,
    parse_shelly,
    parse_tasmota,
)
from .sources import Reading, SourceUnavailable

log = logging.getLogger("power_collector")


class MqttPlug:
    """One smart plug: parse its reports into cumulative wall joules."""

    name = "mqtt_plug"

    def __init__(self, cfg: CollectorConfig) -> None:
        if not cfg.mqtt_host:
            raise SourceUnavailable(
                "the mqtt source needs the plug's broker: set JOULESTREAM_COLLECTOR_MQTT_HOST "
                "(and _MQTT_DEVICE, _MQTT_FORMAT)")
        if cfg.mqtt_format == "generic" and not (cfg.mqtt_power_path or cfg.mqtt_energy_path):
            raise SourceUnavailable("mqtt_format 'generic' needs mqtt_power_path and/or "
                                    "mqtt_energy_path")
        self.cfg = cfg
        try:
            self.topic = cfg.plug_topic()
        except ValueError as e:
            raise SourceUnavailable(str(e)) from e
        self.zone = f"plug:{cfg.mqtt_device}"
        self.meter = PlugMeter(prefer_counter=cfg.mqtt_prefer_counter)
        self.bad_messages = 0
        self.messages = 0

    def zones(self) -> list[Zone]:
        return [Zone(name=self.zone, kind="wall", source="mqtt_plug", basis="measured",
                     scope="wall", in_total=True)]

    def parse(self, payload: bytes) -> PlugReading | None:
        c = self.cfg
        if c.mqtt_format == "tasmota":
            return parse_tasmota(payload)
        if c.mqtt_format == "shelly":
            return parse_shelly(payload, c.mqtt_shelly_component)
        return parse_generic(payload, c.mqtt_power_path, c.mqtt_energy_path, c.mqtt_energy_unit)

    def handle(self, payload: bytes, mono_ns: int) -> Reading | None:
        """One message → one reading (None when the message carries no meter data).
        Raises ``PlugPayloadError`` for a message not in the configured form."""
        r = self.parse(payload)
        if r is None:
            return None
        self.messages += 1
        j, p = self.meter.update(r, mono_ns)
        power = {self.zone: p} if p is not None else {}
        return Reading({self.zone: j}, power)

    def _client(self) -> aiomqtt.Client:
        c = self.cfg
        assert c.mqtt_host is not None
        return aiomqtt.Client(
            c.mqtt_host, c.mqtt_port, username=c.mqtt_username,
            password=c.mqtt_password.get_secret_value() if c.mqtt_password else None,
            identifier=f"joulestream-{uuid.uuid4().hex[:12]}", timeout=5.0,
        )

    async def check(self) -> None:
        """Connect once: an unreachable broker makes the source unavailable."""
        try:
            async with self._client():
                pass
        except aiomqtt.MqttError as e:
            raise SourceUnavailable(
                f"MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} unreachable: {e}") from e

    async def run(self, on_reading: Callable[[Reading, int], None],
                  on_bad: Callable[[str], None], subscribed: asyncio.Event | None = None) -> None:
        """Subscribe and feed readings until cancelled; reconnects with backoff."""
        delay = 0.5
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(self.topic, qos=0)
                    log.info("mqtt plug %s: subscribed to %s", self.zone, self.topic)
                    if subscribed is not None:
                        subscribed.set()
                    delay = 0.5
                    async for msg in client.messages:
                        mono = time.monotonic_ns()
                        payload = msg.payload if isinstance(msg.payload, bytes) else \
                            str(msg.payload).encode()
                        try:
                            r = self.handle(payload, mono)
                        except PlugPayloadError as e:
                            self.bad_messages += 1
                            on_bad(f"{msg.topic}: {e}")
                            continue
                        if r is not None:
                            on_reading(r, mono)
            except aiomqtt.MqttError as e:
                log.warning("mqtt plug %s: %s; reconnecting in %.1fs", self.zone, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
