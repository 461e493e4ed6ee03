"""Runner, pure parts: scenario matrices and ffmpeg command lines."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

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
    rate = f"crf{s.crf:g}" if s.crf is not None else f"{s.bitrate_kbps:g}k"
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
) -> list[Scenario]:
    """The cross product of the given settings, in a stable order with stable ids."""
    rates: list[tuple[float | None, float | None]] = [(b, None) for b in bitrates_kbps]
    rates += [(None, c) for c in crfs]
    if not rates:
        raise ValueError("give at least one bitrate or CRF")
    out: list[Scenario] = []
    i = 0
    for codec, preset, res, (br, crf), n, _rep in itertools.product(
        codecs, presets, resolutions, rates, streams, range(repetitions)
    ):
        w, h = parse_resolution(res)
        s = EncodeSettings(codec=codec, preset=preset, bitrate_kbps=br, crf=crf, width=w,
                           height=h, fps=fps, duration_s=duration_s, streams=n, source=source)
        out.append(Scenario(scenario_id(run_id, i, s), s))
        i += 1
    return out


def encode_command(
    ffmpeg: str, source: str, s: EncodeSettings, output: str, realtime: bool = False,
    lavfi: bool = False,
) -> list[str]:
    """One ffmpeg encode of ``duration_s`` of ``source`` at the scenario's settings.

    ``-progress pipe:1`` reports frames on stdout; audio is dropped (video energy only).
    """
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1"]
    if realtime:
        cmd.append("-re")
    if lavfi:
        cmd += ["-f", "lavfi"]
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
    elif s.bitrate_kbps is not None:
        b = f"{s.bitrate_kbps:g}k"
        cmd += ["-b:v", b, "-maxrate", b, "-bufsize", f"{2 * s.bitrate_kbps:g}k"]
    if s.threads:
        cmd += ["-threads", str(s.threads)]
    cmd += [output]
    return cmd


def parse_progress(text: str) -> dict[str, str]:
    """Last value of each key in ffmpeg's ``-progress`` output."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out
