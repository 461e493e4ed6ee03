"""Runner, pure parts: scenario matrices (from flags or a YAML/TOML file) and ffmpeg
command lines.  No I/O here: file reading and process handling live in ``app.py``."""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.scenario_events import EncodeSettings

#: encoder → how its speed preset is passed
PRESET_FLAG = {
    "libx264": "-preset", "libx265": "-preset", "libsvtav1": "-preset",
    "libvpx-vp9": "-cpu-used", "libaom-av1": "-cpu-used",
}
CONTAINER = {"libx264": "mkv", "libx265": "mkv", "libsvtav1": "mkv", "libvpx-vp9": "webm",
             "libaom-av1": "mkv"}


@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    settings: EncodeSettings


def parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{2,5})x(\d{2,5})", text.strip())
    if not m:
        raise ValueError(f"resolution must look like 1280x720, got {text!r}")
    return int(m[1]), int(m[2])


def scenario_id(run_id: str, index: int, s: EncodeSettings) -> str:
    if s.crf is not None:
        rate = f"crf{s.crf:g}"
    elif s.qp is not None:
        rate = f"qp{s.qp:g}"
    elif s.bitrate_kbps is not None:
        rate = f"{s.bitrate_kbps:g}k"
    else:
        rate = "default"
    sid = f"{run_id}-{index:03d}-{s.codec}-{s.preset or 'default'}-{s.width}x{s.height}-{rate}"
    if s.streams > 1:
        sid += f"-x{s.streams}"
    return re.sub(r"[^A-Za-z0-9_.:@+\-]", "_", sid)


def build_matrix(
    run_id: str,
    codecs: list[str],
    presets: list[str],
    resolutions: list[str],
    bitrates_kbps: list[float],
    crfs: list[float],
    fps: float,
    duration_s: float,
    streams: list[int],
    source: str,
    repetitions: int = 1,
    qps: list[float] | None = None,
    realtime: bool = False,
    start_index: int = 0,
) -> list[Scenario]:
    """The cross product of the given settings, in a stable order with stable ids.

    Rate control: each bitrate (CBR, kbit/s), each CRF and each QP is one rate point."""
    rates: list[tuple[float | None, float | None, float | None]] = [
        (b, None, None) for b in bitrates_kbps]
    rates += [(None, c, None) for c in crfs]
    rates += [(None, None, q) for q in (qps or [])]
    if not rates:
        raise ValueError("give at least one bitrate, CRF or QP")
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    out: list[Scenario] = []
    i = start_index
    for codec, preset, res, (br, crf, qp), n, _rep in itertools.product(
        codecs, presets, resolutions, rates, streams, range(repetitions)
    ):
        if codec not in PRESET_FLAG:
            raise ValueError(f"unknown encoder {codec!r}; use one of {sorted(PRESET_FLAG)}")
        w, h = parse_resolution(res)
        s = EncodeSettings(codec=codec, preset=preset, bitrate_kbps=br, crf=crf, qp=qp,
                           width=w, height=h, fps=fps, duration_s=duration_s, streams=n,
                           source=source, realtime=realtime)
        out.append(Scenario(scenario_id(run_id, i, s), s))
        i += 1
    return out


# ---- matrix files ------------------------------------------------------------------------

def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) or v is None else [v]


class MatrixBlock(BaseModel):
    """One block of a matrix file: the cross product of its lists.  A scalar counts as a
    one-element list; fields left out take the file's top-level defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: list[str] | None = None
    preset: list[str] | None = None
    resolution: list[str] | None = None
    bitrate_kbps: list[float] | None = None
    crf: list[float] | None = None
    qp: list[float] | None = None
    streams: list[int] | None = None

    @field_validator("codec", "preset", "resolution", "bitrate_kbps", "crf", "qp", "streams",
                     mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)


class MatrixSpec(MatrixBlock):
    """A matrix file (YAML or TOML); see docs/runner.md for the format."""

    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@+\-]{1,60}$")
    #: ``natural`` (the bundled Big Buck Bunny clip), ``lavfi:<graph>``, or a file path
    source: str = "natural"
    duration_s: float = Field(default=5.0, gt=0, le=86_400)
    fps: float = Field(default=25.0, gt=0, le=1000)
    repetitions: int = Field(default=1, ge=1, le=1000)
    idle_s: float = Field(default=10.0, ge=0, le=86_400)
    warmup_s: float = Field(default=0.0, ge=0, le=3600)
    cooldown_s: float = Field(default=0.0, ge=0, le=3600)
    realtime: bool = False
    #: realtime output: an ``rtmp://``/``srt://`` URL or a file path; ``{id}`` is replaced
    #: by the scenario id (and ``{stream}`` by the stream index)
    output: str | None = None
    matrix: list[MatrixBlock] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MatrixSpec:
        if self.output and not self.realtime:
            raise ValueError("'output' is for realtime mode; set realtime: true")
        return self

    def scenarios(self, run_id: str, source: str) -> list[Scenario]:
        """Every scenario of the file: each block (or the top level alone) crossed."""
        blocks = self.matrix or [MatrixBlock()]
        out: list[Scenario] = []
        for b in blocks:
            def pick(name: str, default: list[Any], b: MatrixBlock = b) -> list[Any]:
                v = getattr(b, name)
                if v is None:
                    v = getattr(self, name)
                return list(default if v is None else v)
            rates_given = any(getattr(b, k) is not None or getattr(self, k) is not None
                              for k in ("bitrate_kbps", "crf", "qp"))
            out += build_matrix(
                run_id, pick("codec", ["libx264"]), pick("preset", ["veryfast"]),
                pick("resolution", ["1280x720"]),
                pick("bitrate_kbps", [] if rates_given else [1500.0]), pick("crf", []),
                self.fps, self.duration_s, pick("streams", [1]), source, self.repetitions,
                qps=pick("qp", []), realtime=self.realtime, start_index=len(out))
        return out


def parse_matrix_text(text: str, fmt: Literal["yaml", "toml"]) -> MatrixSpec:
    """Parse a matrix file's text; raises ``ValueError`` (or pydantic's) with the reason."""
    data = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a matrix file must be a mapping")
    for b in data.get("matrix") or []:
        if isinstance(b, dict) and "preset" in b:
            b["preset"] = [str(x) for x in _as_list(b["preset"])]
    if "preset" in data:
        data["preset"] = [str(x) for x in _as_list(data["preset"])]
    return MatrixSpec.model_validate(data)


def resolve_source(source: str, natural: str) -> tuple[str, bool]:
    """(input for ffmpeg, is lavfi) of a matrix ``source``: ``natural``, ``lavfi:…``, path."""
    if source == "natural":
        return natural, False
    if source.startswith("lavfi:"):
        return source[len("lavfi:"):], True
    return source, False


def live_format(output: str) -> list[str]:
    """ffmpeg muxer flags for a live output: FLV for RTMP, MPEG-TS for SRT/UDP; files by
    extension (none)."""
    low = output.lower()
    if low.startswith(("rtmp://", "rtmps://")):
        return ["-f", "flv"]
    if low.startswith(("srt://", "udp://", "rtp://")):
        return ["-f", "mpegts"]
    return []


def encode_command(
    ffmpeg: str, source: str, s: EncodeSettings, output: str, realtime: bool = False,
    lavfi: bool = False, loop: bool = False,
) -> list[str]:
    """One ffmpeg encode of ``duration_s`` of ``source`` at the scenario's settings.

    ``-progress pipe:1`` reports frames on stdout; audio is dropped (video energy only).
    ``realtime`` (or ``s.realtime``) reads the input at its native rate (``-re``), so the
    encode runs at 1x speed like a live encoder (ffmpeg reads ~0.5 s ahead at the start);
    ``loop`` repeats a file input so a clip shorter than ``duration_s`` feeds the window.
    """
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1"]
    if realtime or s.realtime:
        cmd.append("-re")
    if lavfi:
        cmd += ["-f", "lavfi"]
    elif loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-t", f"{s.duration_s:.6f}", "-i", source, "-an"]
    vf = []
    if s.width and s.height:
        vf.append(f"scale={s.width}:{s.height}:flags=bicubic")
    if s.fps:
        vf.append(f"fps={s.fps:g}")
    if vf:
        cmd += ["-vf", ",".join(vf)]
    cmd += ["-c:v", s.codec]
    if s.preset is not None:
        cmd += [PRESET_FLAG.get(s.codec, "-preset"), s.preset]
    if s.crf is not None:
        cmd += ["-crf", f"{s.crf:g}"]
        if s.codec in ("libvpx-vp9", "libaom-av1"):
            cmd += ["-b:v", "0"]
    elif s.qp is not None:
        cmd += ["-qp", f"{s.qp:g}"]
    elif s.bitrate_kbps is not None:
        b = f"{s.bitrate_kbps:g}k"
        cmd += ["-b:v", b, "-maxrate", b, "-bufsize", f"{2 * s.bitrate_kbps:g}k"]
    if s.threads:
        cmd += ["-threads", str(s.threads)]
    cmd += [*live_format(output), output]
    return cmd


def parse_progress(text: str) -> dict[str, str]:
    """Last value of each key in ffmpeg's ``-progress`` output."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out
