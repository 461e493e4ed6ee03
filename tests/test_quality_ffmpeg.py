"""quality_worker with real ffmpeg/libvmaf on real encodes of a natural clip and a pattern:
known-quality orderings, the timestamp trap, subsampling, frame-count checks, the 4K model.
Clips are 1 s at 320x180 (30 frames) so the whole file runs in seconds."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas.quality_results import QualityResult
from schemas.scenario_events import EncodeSettings, ScenarioFinished
from services.quality_worker.app import QualityProcessor
from services.quality_worker.config import QualityConfig
from shared.ffmpeg import ffmpeg_exe, ffmpeg_version, natural_clip
from shared.kafka import BadInput

W, H, FPS, DUR = 320, 180, 30, 1.0


def ff(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", *args],
                   check=True)


def make_media(root: Path) -> dict[str, Path]:
    """30 fps lossless references (Y4M) and x264 encodes of a natural clip and a pattern."""
    root.mkdir(parents=True, exist_ok=True)
    m = {k: root / v for k, v in {
        "nat_ref": "nat_ref.y4m", "nat_lo": "nat_lo.mkv", "nat_hi": "nat_hi.mkv",
        "nat_short": "nat_short.mkv", "pat_ref": "pat_ref.y4m", "pat_lo": "pat_lo.mp4",
        "pat_hi": "pat_hi.mp4"}.items()}
    if all(p.exists() for p in m.values()):
        return m
    ff("-t", f"{DUR}", "-i", natural_clip(), "-an", "-vf", f"fps={FPS},scale={W}:{H}",
       "-pix_fmt", "yuv420p", str(m["nat_ref"]))
    ff("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}:duration={DUR}",
       "-pix_fmt", "yuv420p", str(m["pat_ref"]))
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-threads", "1"]
    for src, kind, ext in (("nat_ref", "nat", "mkv"), ("pat_ref", "pat", "mp4")):
        ff("-i", str(m[src]), *x264, "-b:v", "40k", str(root / f"{kind}_lo.{ext}"))
        ff("-i", str(m[src]), *x264, "-crf", "12", str(root / f"{kind}_hi.{ext}"))
    ff("-i", str(m["nat_ref"]), "-t", "0.5", *x264, "-crf", "12", str(m["nat_short"]))
    return m


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("quality") / "media")


def finished(dist: Path, ref: Path, sid: str = "sc1", duration_s: float = DUR,
             fps: float = FPS, codec: str = "libx264") -> ScenarioFinished:
    now = time.time_ns()
    return ScenarioFinished(
        event_id=f"{sid}-finished", scenario_id=sid, host="h1", start_ns=now, end_ns=now,
        frames=round(duration_s * fps), cpu_s=0.1, output_path=str(dist),
        reference_path=str(ref),
        settings=EncodeSettings(codec=codec, preset="veryfast", width=W, height=H, fps=fps,
                                duration_s=duration_s))


def processor(media: dict[str, Path], out: Path, **kw: object) -> QualityProcessor:
    root = str(media["nat_ref"].parent)
    return QualityProcessor(CollectorRegistry(),
                            QualityConfig(media_roots=[root], out_dir=str(out), threads=2,
                                          **kw))  # type: ignore[arg-type]


async def test_higher_bitrate_scores_higher_with_provenance(
        media: dict[str, Path], tmp_path: Path) -> None:
    p = processor(media, tmp_path)
    for kind in ("nat", "pat"):
        ref = media[f"{kind}_ref"]
        lo = await p.score(finished(media[f"{kind}_lo"], ref, f"{kind}-lo"))
        hi = await p.score(finished(media[f"{kind}_hi"], ref, f"{kind}-hi"))
        assert hi.vmaf > lo.vmaf + 5, (kind, lo.vmaf, hi.vmaf)
        assert hi.vmaf_neg is not None and lo.vmaf_neg is not None
        assert hi.vmaf_neg > lo.vmaf_neg
        assert hi.psnr_y and lo.psnr_y and hi.psnr_y > lo.psnr_y
        assert hi.ssim and lo.ssim and hi.ssim > lo.ssim
        for r in (lo, hi):
            check_result(r)
    text = generate_latest(p.registry).decode()
    pre = "joulestream_quality_worker"
    assert f'{pre}_vmaf_count{{codec="libx264",preset="veryfast"}} 4.0' in text
    assert f'{pre}_vmaf_neg_count{{codec="libx264",preset="veryfast"}} 4.0' in text
    assert f"{pre}_compute_seconds_count 4.0" in text
    assert f"{pre}_scoring_frames_per_second_count 4.0" in text
    assert f"{pre}_frames_scored_total 120.0" in text
    assert f"{pre}_jobs_in_flight 0.0" in text
    assert f'{pre}_failures_total{{reason="unsafe_path"}} 0.0' in text


def test_metric_labels_are_bounded(tmp_path: Path) -> None:
    p = QualityProcessor(CollectorRegistry(), QualityConfig(out_dir=str(tmp_path)))
    pairs = {p.metrics.labels(f"codec{i}", "fast") for i in range(200)}
    assert len(pairs) == 65 and ("other", "other") in pairs


def check_result(r: QualityResult) -> None:
    assert r.vmaf_model == "vmaf_v0.6.1" and r.vmaf_neg_model == "vmaf_v0.6.1neg"
    assert r.ffmpeg_version == ffmpeg_version() and r.libvmaf_version
    assert r.libvmaf_version in r.tool_version and r.ffmpeg_version in r.tool_version
    assert r.frames_scored == r.frames_reference == round(DUR * FPS)
    assert (r.ref_width, r.ref_height, r.frame_rate) == (W, H, FPS)
    assert r.psnr_avg is not None and r.vmaf_neg is not None
    for name in ("vmaf", "vmaf_neg", "psnr_y", "float_ssim"):
        s = r.pooled[name]
        assert s.min <= (s.p1 or 0) <= (s.p5 or 0) <= s.mean
        assert s.harmonic_mean is not None and s.harmonic_mean <= s.mean + 1e-9
    # per-frame scores next to the result, consistent with the pooled figures
    assert r.per_frame_path
    doc = json.loads(Path(r.per_frame_path).read_text())
    assert doc["vmaf_model"] == r.vmaf_model and doc["libvmaf_version"] == r.libvmaf_version
    assert len(doc["vmaf"]) == len(doc["frame"]) == r.frames_scored
    assert sum(doc["vmaf"]) / len(doc["vmaf"]) == pytest.approx(r.vmaf)
    assert min(doc["vmaf_neg"]) == pytest.approx(r.pooled["vmaf_neg"].min)


def naive_vmaf(dist: Path, ref: Path) -> float:
    """What a bare ``[0][1]libvmaf`` gives: frames paired by arrival time, no alignment."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-i", str(dist),
         "-i", str(ref), "-lavfi", "[0:v][1:v]libvmaf=log_fmt=json:log_path=/dev/stdout",
         "-f", "null", "-"], capture_output=True, check=True).stdout
    return float(json.loads(out)["pooled_metrics"]["vmaf"]["mean"])


async def test_timestamp_trap_30fps_reference_vs_mkv(
        media: dict[str, Path], tmp_path: Path) -> None:
    """An MKV stores 1 ms timestamps: frame 1 sits at 33 ms < 33.3 ms, so unaligned framesync
    pairs it with reference frame 0 (every 3rd frame off by one).  Ours must not."""
    dist, ref = media["nat_hi"], media["nat_ref"]
    naive = naive_vmaf(dist, ref)
    ours = (await processor(media, tmp_path).score(finished(dist, ref))).vmaf
    assert ours > 95, ours  # a near-lossless encode
    assert naive < ours - 5, (naive, ours)  # the trap is real here, and we avoid it


async def test_subsampling_is_recorded(media: dict[str, Path], tmp_path: Path) -> None:
    full = await processor(media, tmp_path).score(finished(media["nat_lo"], media["nat_ref"]))
    sub = await processor(media, tmp_path / "s", subsample=3).score(
        finished(media["nat_lo"], media["nat_ref"]))
    assert sub.subsample == 3 and sub.frames_scored == 10 and full.frames_scored == 30
    assert sub.frames_reference == 30
    assert abs(sub.vmaf - full.vmaf) < 5


async def test_truncated_encode_is_an_error_not_a_score(
        media: dict[str, Path], tmp_path: Path) -> None:
    p = processor(media, tmp_path)
    with pytest.raises(BadInput) as e:
        await p.score(finished(media["nat_short"], media["nat_ref"]))
    assert e.value.error_type == "frame_mismatch" and "scored 15 frames" in e.value.reason
    assert p.metrics.failures.labels("frame_mismatch")._value.get() == 1


async def test_above_1080p_uses_the_4k_model_and_its_neg_twin(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    ref, dist = root / "tall.y4m", root / "tall.mkv"
    ff("-f", "lavfi", "-i", "testsrc2=size=64x1096:rate=10:duration=0.3", "-pix_fmt",
       "yuv420p", str(ref))
    ff("-i", str(ref), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", str(dist))
    p = QualityProcessor(CollectorRegistry(), QualityConfig(
        media_roots=[str(root)], out_dir=str(tmp_path / "q"), threads=1))
    r = await p.score(finished(dist, ref, duration_s=0.3, fps=10))
    assert r.vmaf_model == "vmaf_4k_v0.6.1" and r.vmaf_neg_model == "vmaf_4k_v0.6.1neg"
    assert r.frames_scored == 3 and r.vmaf_neg is not None
    forced = await QualityProcessor(CollectorRegistry(), QualityConfig(
        media_roots=[str(root)], out_dir=str(tmp_path / "q"), threads=1,
        vmaf_model="vmaf_v0.6.1")).score(finished(dist, ref, duration_s=0.3, fps=10))
    assert forced.vmaf_model == "vmaf_v0.6.1" and forced.vmaf != r.vmaf


def test_quality_score_cli(media: dict[str, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    with pytest.raises(SystemExit) as e:
        main(["quality-score", str(media["pat_ref"]), str(media["pat_hi"]), "--duration", "1",
              "--threads", "1", "--out-dir", str(tmp_path)])
    assert e.value.code == 0
    r = QualityResult.model_validate_json(capsys.readouterr().out)
    assert r.vmaf > 90 and r.frames_scored == 30 and r.vmaf_model == "vmaf_v0.6.1"
    with pytest.raises(SystemExit) as e:
        main(["quality-score", str(media["pat_ref"]), str(tmp_path / "none.mp4")])
    assert e.value.code == 1 and "missing_file" in capsys.readouterr().err
