"""Runner matrices and commands (the quality worker's unit tests are in test_quality_units.py)."""

from __future__ import annotations

import pytest

from schemas.scenario_events import EncodeSettings
from services.runner.logic import build_matrix, encode_command, parse_progress


def test_matrix_is_the_cross_product_with_stable_unique_ids() -> None:
    m = build_matrix("r1", ["libx264", "libx265"], ["fast"], ["640x360", "1280x720"],
                     [500, 1000], [23], 25, 5, [1, 2], "clip.mp4")
    assert len(m) == 2 * 1 * 2 * 3 * 2
    assert len({s.scenario_id for s in m}) == len(m)
    again = build_matrix("r1", ["libx264", "libx265"], ["fast"], ["640x360", "1280x720"],
                         [500, 1000], [23], 25, 5, [1, 2], "clip.mp4")
    assert [s.scenario_id for s in m] == [s.scenario_id for s in again]
    with pytest.raises(ValueError, match="resolution"):
        build_matrix("r", ["libx264"], ["fast"], ["720p"], [500], [], 25, 5, [1], "c")


def test_encode_command_carries_every_setting() -> None:
    s = EncodeSettings(codec="libvpx-vp9", preset="4", crf=32, width=640, height=360, fps=30,
                       duration_s=3, threads=2)
    cmd = encode_command("ffmpeg", "in.mp4", s, "out.webm")
    joined = " ".join(cmd)
    assert "-c:v libvpx-vp9" in joined and "-cpu-used 4" in joined
    assert "-crf 32" in joined and "-b:v 0" in joined
    assert "scale=640:360" in joined and "fps=30" in joined and "-t 3.000000" in joined
    assert "-threads 2" in joined and cmd[-1] == "out.webm"


def test_parse_progress_takes_last_values() -> None:
    assert parse_progress("frame=10\nprogress=continue\nframe=125\nprogress=end\n") == {
        "frame": "125", "progress": "end"}
