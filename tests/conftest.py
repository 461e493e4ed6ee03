"""Shared fixtures: one embedded broker per session (started lazily, only by tests that need
it), and a fresh topic namespace per test so tests never see each other's messages."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.broker import EmbeddedBroker
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings


def docker_available() -> bool:
    """True when a Docker engine answers (never on the development machines here)."""
    try:
        import docker  # testcontainers' dependency

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the broker the suite runs against:

    * ``JOULESTREAM_TEST_BOOTSTRAP=host:port`` — any running Kafka;
    * ``JOULESTREAM_TEST_KAFKA=apache`` — Apache Kafka (KRaft) started by testcontainers
      (needs a Docker engine);
    * otherwise the embedded Tansu broker.
    """
    external = os.environ.get("JOULESTREAM_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    if os.environ.get("JOULESTREAM_TEST_KAFKA") == "apache":
        if not docker_available():
            pytest.fail("JOULESTREAM_TEST_KAFKA=apache needs a Docker engine")
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log) as b:
        yield b.bootstrap


@pytest.fixture
async def kafka(broker: str) -> AsyncIterator[KafkaSettings]:
    """Kafka settings with a topic namespace of this test's own; topics created."""
    settings = KafkaSettings(bootstrap_servers=broker,
                             topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=4)
    await ensure_topics(settings)
    yield settings


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
