"""quality_worker pure logic: model choice, the one-pass command, pooling, frame checks, paths.
(Real-ffmpeg and broker tests are in test_quality_ffmpeg.py and test_quality_worker.py.)"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.quality_worker.config import QualityConfig
from services.quality_worker.logic import (
    UnsafePath,
    build_command,
    choose_model,
    expected_frames,
    file_stem,
    frame_mismatch,
    neg_model_for,
    parse_vmaf_log,
    pooled,
    safe_media_path,
    vmaf_model_for,
)


def test_model_by_resolution_with_neg_twin_and_override() -> None:
    assert vmaf_model_for(720) == "vmaf_v0.6.1"
    assert vmaf_model_for(1080) == "vmaf_v0.6.1"
    assert vmaf_model_for(1440) == "vmaf_4k_v0.6.1"
    assert choose_model("auto", 2160) == "vmaf_4k_v0.6.1"
    assert choose_model("vmaf_4k_v0.6.1", 360) == "vmaf_4k_v0.6.1"  # override wins
    assert neg_model_for("vmaf_v0.6.1") == "vmaf_v0.6.1neg"
    assert neg_model_for("vmaf_4k_v0.6.1") == "vmaf_4k_v0.6.1neg"
    assert neg_model_for("vmaf_v0.6.1neg") is None
    assert neg_model_for("vmaf_float_4k_v0.6.1") is None  # libvmaf ships no twin
    with pytest.raises(ValueError, match="unknown VMAF model"):
        choose_model("vmaf_v9", 720)
    with pytest.raises(ValidationError):
        QualityConfig(vmaf_model="vmaf_v0.6.1:log_path=/etc/x")


def test_command_is_one_pass_aligned_and_bicubic() -> None:
    cmd = build_command("ffmpeg", "d.mkv", "r.mp4", 1920, 1080, "vmaf_4k_v0.6.1", 5.0, 2,
                        fps=30, subsample=3, neg_model="vmaf_4k_v0.6.1neg")
    assert cmd.count("-lavfi") == 1 and cmd.count("-i") == 2
    assert cmd[cmd.index("-i") - 2:cmd.index("-i")] == ["-t", "5.000000"]
    graph = cmd[cmd.index("-lavfi") + 1]
    d, r, vmaf = graph.split(";")
    assert d.startswith("[0:v]setpts=PTS-STARTPTS,fps=30,scale=1920:1080:flags=bicubic")
    assert r.startswith("[1:v]setpts=PTS-STARTPTS,fps=30")
    assert ("version=vmaf_4k_v0.6.1\\\\:name=vmaf|"
            "version=vmaf_4k_v0.6.1neg\\\\:name=vmaf_neg") in vmaf
    for opt in ("feature=name=psnr|name=float_ssim", "n_threads=2", "n_subsample=3",
                "shortest=1", "repeatlast=0", "log_fmt=json", "log_path=/dev/stdout"):
        assert opt in vmaf
    no_fps = build_command("ffmpeg", "d", "r", 64, 64, "vmaf_v0.6.1", None, 1)
    assert "fps=" not in no_fps[no_fps.index("-lavfi") + 1] and "-t" not in no_fps
    with pytest.raises(ValueError):
        build_command("ffmpeg", "d", "r", 64, 64, "vmaf_v0.6.1", None, 1, log_path="a:b,c")


def test_pooled_statistics() -> None:
    vals = [float(v) for v in range(1, 101)]
    p = pooled(vals)
    assert p["mean"] == pytest.approx(50.5) and p["min"] == 1.0
    assert p["harmonic_mean"] == pytest.approx(100 / sum(1 / v for v in vals))
    assert p["p1"] == pytest.approx(1.99) and p["p5"] == pytest.approx(5.95)
    assert pooled([0.0, 50.0])["harmonic_mean"] is None  # undefined with a zero
    with pytest.raises(ValueError):
        pooled([math.nan])


def test_log_parsing_pools_psnr_by_mse() -> None:
    doc = {"version": "abc", "frames": [
        {"frameNum": 0, "metrics": {"vmaf": 90, "vmaf_neg": 88, "psnr_y": 30.0, "psnr_cb": 40.0,
                                    "psnr_cr": 40.0, "float_ssim": 0.9}},
        {"frameNum": 2, "metrics": {"vmaf": 80, "vmaf_neg": 79, "psnr_y": 40.0,
                                    "psnr_cb": 40.0, "psnr_cr": 40.0, "float_ssim": 0.8}}]}
    out = parse_vmaf_log(doc)
    # MSE-pooled: mean(1e-3, 1e-4) = 5.5e-4 → 32.596 dB, not the 35 dB of averaging dB
    assert out["psnr_y"] == pytest.approx(-10 * math.log10(5.5e-4))
    whole = ((4e-3 + 2e-4) / 6 + (4e-4 + 2e-4) / 6) / 2  # 4:1:1 samples in 4:2:0
    assert out["psnr_avg"] == pytest.approx(-10 * math.log10(whole))
    assert out["pooled"]["vmaf"]["mean"] == pytest.approx(85.0)
    assert out["pooled"]["vmaf_neg"]["min"] == 79
    assert out["frames"] == 2 and out["version"] == "abc"
    assert out["per_frame"]["frame"] == [0, 2] and out["per_frame"]["vmaf"] == [90, 80]
    with pytest.raises(ValueError):
        parse_vmaf_log({"frames": []})
    with pytest.raises(ValueError):
        parse_vmaf_log({"frames": [{"metrics": {"psnr_y": 30}}]})


def test_frame_count_check() -> None:
    assert expected_frames(2.0, 30) == 60
    assert frame_mismatch(60, 1, 60, exact_window=True) is None
    assert frame_mismatch(59, 1, 60, exact_window=True) is None  # ±1 for rounding at the edge
    assert "mismatch" in (frame_mismatch(40, 1, 60, exact_window=True) or "")
    assert frame_mismatch(20, 3, 60, exact_window=True) is None  # every 3rd frame
    assert frame_mismatch(30, 3, 60, exact_window=True) is not None
    # window from the container: 2 % slack (audio may outlast video)
    assert frame_mismatch(980, 1, 1000, exact_window=False) is None
    assert frame_mismatch(970, 1, 1000, exact_window=False) is not None


def test_file_stem_is_safe_and_unique() -> None:
    a, b = file_stem("run/1:x"), file_stem("run_1_x")
    assert a != b and "/" not in a and ":" not in a


def test_safe_media_path_blocks_escapes(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "ok.mkv").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    os.symlink(tmp_path / "secret", root / "link.mkv")
    os.symlink(tmp_path, root / "sub" / "up")
    os.symlink(root / "ok.mkv", root / "inside.mkv")
    assert safe_media_path(str(root / "ok.mkv"), [str(root)]) == (root / "ok.mkv").resolve()
    assert safe_media_path(str(root / "sub" / ".." / "ok.mkv"), [str(root)]).name == "ok.mkv"
    assert safe_media_path(str(root / "inside.mkv"), [str(root)]).name == "ok.mkv"
    for bad in (str(root / ".." / "secret"), str(root / "link.mkv"), "/etc/passwd",
                str(root / "sub" / "up" / "secret"), str(root) + "/ok.mkv\x00", "",
                "ok.mkv", str(root) + "-sibling/x.mkv"):
        with pytest.raises(UnsafePath):
            safe_media_path(bad, [str(root)])
