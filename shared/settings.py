"""Settings shared by every service, read from the environment (pydantic-settings).

Kafka options follow aiokafka's names and are passed through unchanged, so any Kafka works:
the embedded broker, Apache Kafka from docker-compose, or a managed cluster with SASL/TLS.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Connection settings; env vars ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SASL_USERNAME``, …"""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = Field(default_factory=lambda: f"joulestream-{socket.gethostname()}")
    #: the embedded broker takes ~5 s per group join: keep this well above that
    request_timeout_ms: int = 40_000
    #: partitions for topics joulestream creates (power.samples and scenario.events must match)
    partitions: int = Field(default=4, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=16)
    #: a consumer-group member that sends no heartbeat for this long (crashed, killed) is
    #: dropped and its partitions go to the others: the failover time after a crash
    session_timeout_ms: int = Field(default=30_000, ge=1_000, le=300_000)
    #: how long a consumer waits for data before returning (latency vs CPU)
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    #: prefix for every topic name (namespaces one deployment, or one test, on a shared broker)
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)

    def topic(self, name: str) -> str:
        """The broker-side name of a logical topic."""
        return self.topic_prefix + name

    def logical(self, name: str) -> str:
        """The logical name of a broker-side topic."""
        p = self.topic_prefix
        return name[len(p):] if p and name.startswith(p) else name

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            kw["ssl_context"] = ctx
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kw


class ServiceSettings(BaseSettings):
    """Per-service runtime options (env prefix ``JOULESTREAM_``)."""

    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_", frozen=True, extra="ignore")

    host: str = Field(default_factory=socket.gethostname)
    #: port of the service's /metrics and /healthz endpoint; 0 picks a free port; -1 disables
    metrics_port: int = Field(default=0, ge=-1, le=65535)
    metrics_addr: str = "0.0.0.0"
    log_level: str = "INFO"
    data_dir: str = "./joulestream-data"
