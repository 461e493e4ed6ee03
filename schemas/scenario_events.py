"""Topic ``scenario.events`` — lifecycle of encoding scenarios.

Key: host name (co-partitioned with ``power.samples``).  Any tool may publish these events;
the runner is one publisher.  A ``finished`` event is self-contained (settings, window,
CPU time, output) so workers never need to have seen the ``started`` event.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._base import Event, Name, NonNegFloat, ShortText, TimestampNs

TOPIC = "scenario.events"
SCHEMA_VERSION = 1

PathText = Annotated[str, Field(min_length=1, max_length=4096)]


class EncodeSettings(Event):
    """What was encoded and how.  ``codec == "idle"`` marks an idle-baseline window."""

    codec: Name  # ffmpeg encoder name (libx264, libx265, libsvtav1, ...) or "idle"
    preset: Name | None = None
    bitrate_kbps: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    crf: Annotated[float, Field(ge=0, le=63)] | None = None
    #: constant quantiser (``-qp``), the third rate-control mode
    qp: Annotated[float, Field(ge=0, le=255)] | None = None
    width: Annotated[int, Field(ge=0, le=16384)] = 0
    height: Annotated[int, Field(ge=0, le=16384)] = 0
    fps: Annotated[float, Field(ge=0, le=1000)] = 0.0
    duration_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0  # seconds of content
    streams: Annotated[int, Field(ge=1, le=1024)] = 1
    threads: Annotated[int, Field(ge=0, le=1024)] = 0  # 0 = encoder default
    source: Annotated[str, Field(max_length=4096)] = ""  # clip name or lavfi pattern
    #: encoded at 1x speed (ffmpeg ``-re``) to a live output, as live encoders run
    realtime: bool = False

    @property
    def is_idle(self) -> bool:
        return self.codec == "idle"

    @property
    def rate_control(self) -> str:
        if self.crf is not None:
            return "crf"
        if self.qp is not None:
            return "qp"
        if self.bitrate_kbps is not None:
            return "cbr"
        return "default"


class HardwareInfo(Event):
    """The machine an encode ran on (models are trained per hardware class)."""

    cpu_model: Annotated[str, Field(max_length=200)]
    logical_cpus: Annotated[int, Field(ge=1, le=100_000)]
    sockets: Annotated[int, Field(ge=1, le=64)] = 1
    memory_mib: Annotated[int, Field(ge=0)] = 0
    arch: Name = "unknown"
    gpu_model: Annotated[str, Field(max_length=200)] | None = None
    #: deterministic id of (cpu model, logical CPUs, arch)
    hardware_class: Name


class _ScenarioEvent(Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Name  # unique per event; derived from scenario_id + kind so duplicates collapse
    scenario_id: Name
    host: Name
    run_id: Name | None = None  # the run (matrix) this scenario belongs to, if any
    settings: EncodeSettings


class ScenarioStarted(_ScenarioEvent):
    kind: Literal["started"] = "started"
    start_ns: TimestampNs
    pid: int | None = Field(default=None, ge=0)
    #: monotonic clock of the publisher at start (for intervals; not comparable across hosts)
    start_mono_ns: int | None = Field(default=None, ge=0)


class ScenarioFinished(_ScenarioEvent):
    kind: Literal["finished"] = "finished"
    start_ns: TimestampNs
    end_ns: TimestampNs
    frames: int = Field(ge=0)
    cpu_s: NonNegFloat  # user+system CPU seconds of the encode processes, from the OS
    output_path: PathText | None = None
    reference_path: PathText | None = None
    output_bytes: int | None = Field(default=None, ge=0)
    achieved_fps: NonNegFloat | None = None
    peak_rss_bytes: int | None = Field(default=None, ge=0)
    ffmpeg_version: ShortText | None = None
    hardware: HardwareInfo | None = None
    #: monotonic clock of the publisher at start and end
    start_mono_ns: int | None = Field(default=None, ge=0)
    end_mono_ns: int | None = Field(default=None, ge=0)
    #: bitrate of the output: output_bytes * 8 / content seconds / streams, kbit/s
    output_bitrate_kbps: NonNegFloat | None = None
    #: a live output (RTMP/SRT URL) the encode was streamed to, when not a file
    live_output: Annotated[str, Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _window(self) -> ScenarioFinished:
        if self.end_ns < self.start_ns:
            raise ValueError("end_ns is before start_ns")
        if self.end_ns - self.start_ns > 7 * 86_400 * 10**9:
            raise ValueError("scenario longer than 7 days")
        return self

    @property
    def wall_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def real_bitrate_kbps(self) -> float | None:
        if self.output_bytes is None or self.settings.duration_s <= 0:
            return None
        return self.output_bytes * 8 / 1000 / self.settings.duration_s / self.settings.streams


class ScenarioFailed(_ScenarioEvent):
    kind: Literal["failed"] = "failed"
    start_ns: TimestampNs
    end_ns: TimestampNs
    exit_code: int | None = None
    stderr_tail: ShortText = ""
    #: CPU seconds the failed encode used (from the OS), if known: it still loaded the host
    cpu_s: NonNegFloat | None = None
    start_mono_ns: int | None = Field(default=None, ge=0)
    end_mono_ns: int | None = Field(default=None, ge=0)


ScenarioEvent = Annotated[
    ScenarioStarted | ScenarioFinished | ScenarioFailed, Field(discriminator="kind")
]


from pydantic import TypeAdapter  # noqa: E402

_ADAPTER: TypeAdapter[ScenarioStarted | ScenarioFinished | ScenarioFailed] = TypeAdapter(
    ScenarioEvent
)


def parse_scenario_event(raw: bytes) -> ScenarioStarted | ScenarioFinished | ScenarioFailed:
    """Decode one ``scenario.events`` message; raises ``pydantic.ValidationError``."""
    return _ADAPTER.validate_json(raw)


def scenario_event_json_schema() -> dict:
    return _ADAPTER.json_schema()
