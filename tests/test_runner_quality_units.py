"""Runner matrices and commands; quality command and log parsing; path safety."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from schemas.scenario_events import EncodeSettings
from services.quality_worker.logic import (
    UnsafePath,
    build_command,
    parse_vmaf_log,
    pooled,
    safe_media_path,
    vmaf_model_for,
)
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


def test_vmaf_model_by_resolution() -> None:
    assert vmaf_model_for(1080) == "vmaf_v0.6.1"
    assert vmaf_model_for(2160) == "vmaf_4k_v0.6.1"


def test_quality_command_is_one_pass_with_alignment() -> None:
    cmd = build_command("ffmpeg", "d.mkv", "r.mp4", 1920, 1080, "log.json", "vmaf_v0.6.1",
                        5.0, 2, fps=30)
    graph = cmd[cmd.index("-lavfi") + 1]
    assert "scale=1920:1080:flags=bicubic" in graph
    assert graph.count("setpts=PTS-STARTPTS") == 2 and graph.count("fps=30") == 2
    assert "vmaf_v0.6.1neg" in graph and "name=psnr|name=float_ssim" in graph
    assert "n_threads=2" in graph


def test_pooled_and_psnr_from_mse() -> None:
    p = pooled([90.0, 100.0, 80.0])
    assert p["mean"] == pytest.approx(90.0) and p["min"] == 80.0
    assert p["harmonic_mean"] == pytest.approx(3 / (1 / 90 + 1 / 100 + 1 / 80))
    doc = {"version": "x", "frames": [
        {"frameNum": 0, "metrics": {"vmaf": 90, "psnr_y": 30.0, "psnr_cb": 40.0,
                                    "psnr_cr": 40.0, "float_ssim": 0.9}},
        {"frameNum": 1, "metrics": {"vmaf": 80, "psnr_y": 40.0, "psnr_cb": 40.0,
                                    "psnr_cr": 40.0, "float_ssim": 0.8}}]}
    out = parse_vmaf_log(doc)
    # MSE-pooled: mean(1e-3, 1e-4) = 5.5e-4 → 32.596 dB, not the 35 dB of averaging dB
    assert out["psnr_y"] == pytest.approx(-10 * math.log10(5.5e-4))
    assert out["pooled"]["vmaf"]["mean"] == pytest.approx(85.0)
    assert out["frames"] == 2


def test_safe_media_path_blocks_escapes(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "ok.mkv").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    os.symlink(tmp_path / "secret", root / "link.mkv")
    assert safe_media_path(str(root / "ok.mkv"), [str(root)]) == (root / "ok.mkv").resolve()
    for bad in (str(root / ".." / "secret"), str(root / "link.mkv"), "/etc/passwd",
                str(root) + "/ok.mkv\x00"):
        with pytest.raises(UnsafePath):
            safe_media_path(bad, [str(root)])
