"""`joulestream import` of external CSV/JSONL measurements: rows with errors are reported
by line, never silently dropped; energy keeps the basis the file states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import build_parser
from services.trainer.cli import import_file
from services.trainer.importers import parse_measurements
from services.trainer.store import DatasetStore

PCS2024 = (Path(__file__).parent.parent / "services" / "trainer" / "data"
           / "katsenou_pcs2024_x265.csv")

CSV = """\
# a comment line, ignored
encoder,preset,rate_control,crf,target_bitrate_kbps,resolution,fps,duration_s,threads,host,energy_j,power_w,wall_s,energy_basis,energy_source,vmaf,bitrate_kbps
libx264,medium,crf,23,,1920x1080,30,10,4,lab1,500,,8,measured,rapl,95.1,4000
libx265,slow,cbr,,3000,1280x720,25,10,0,lab1,,40,12.5,estimated,cpu-time,91,2990
libx264,fast,crf,23,,1920x1080,30,10,4,lab1,500,,8,,rapl,95,4000
libx264,fast,crf,,,19x,30,10,4,lab1,500,,8,measured,rapl,95,4000
libx264,fast,crf,20,,1280x720,30,10,4,lab1,,50,,measured,rapl,95,4000
libx264,fast,xyz,20,,1280x720,30,10,4,lab1,100,,8,measured,rapl,95,4000
libx264,fast,crf,20,,1280x720,30,10,4,lab1,100,,8,measured,rapl,95
"""


def test_csv_rows_with_errors_are_reported_by_line() -> None:
    res = parse_measurements(CSV, "csv", "m.csv")
    assert len(res.records) == 2
    by_line = {e.line: e.message for e in res.errors}
    assert set(by_line) == {5, 6, 7, 8, 9}
    assert "energy_basis must be 'measured' or 'estimated'" in by_line[5]
    assert "rate_control crf needs a crf value" in by_line[6] and "resolution" in by_line[6]
    assert "power_w given without wall_s" in by_line[7]
    assert "'xyz' is not crf" in by_line[8]
    assert "16 values for 17 header columns" in by_line[9]

    a, b = res.records
    assert a.energy_j == 500 and a.energy_basis == "measured" and a.energy_source == "rapl"
    assert a.mean_power_w == pytest.approx(500 / 8) and a.origin_ref == "m.csv:3"
    assert a.settings.crf == 23 and a.settings.threads == 4 and a.settings.width == 1920
    # power × time, and the basis as the file says it
    assert b.energy_j == pytest.approx(40 * 12.5) and b.energy_basis == "estimated"
    assert b.settings.bitrate_kbps == 3000 and b.settings.rate_control == "cbr"


def test_unknown_column_rejects_the_file() -> None:
    res = parse_measurements("encoder,enrgy_j\nlibx264,5\n", "csv", "x.csv")
    assert not res.records and res.errors[0].line == 1
    assert "enrgy_j" in res.errors[0].message


def test_jsonl() -> None:
    lines = [
        json.dumps({"encoder": "libsvtav1", "preset": "8", "crf": 35, "width": 1920,
                    "height": 1080, "fps": 30, "duration_s": 10, "energy_j": 700,
                    "energy_basis": "measured", "wall_s": 9, "vmaf": 93, "clip": "a"}),
        "{not json",
        json.dumps({"encoder": "libx264", "crf": 23, "resolution": "1280x720", "fps": 30,
                    "duration_s": 10, "energy_j": -1, "energy_basis": "measured"}),
        json.dumps([1, 2]),
    ]
    res = parse_measurements("\n".join(lines), "jsonl", "m.jsonl")
    assert len(res.records) == 1 and res.records[0].settings.codec == "libsvtav1"
    assert {e.line: e.message.split(":")[0] for e in res.errors} == {
        2: "not JSON", 3: "energy_j is negative", 4: "not a JSON object"}


def test_import_upserts_and_states(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text(CSV)
    store = DatasetStore(tmp_path / "d.sqlite")
    s1, errs = import_file(store, str(f))
    assert s1 == {"format": "csv", "imported": 2, "rejected": 5} and len(errs) == 5
    import_file(store, str(f))  # again: same ids, nothing duplicated
    st = store.status()
    assert st.complete == 2 and st.by_origin == {"import": 2}


def test_import_without_quality_is_incomplete_with_reason(tmp_path: Path) -> None:
    text = ("encoder,crf,resolution,fps,duration_s,energy_j,energy_basis\n"
            "libx264,23,1280x720,30,10,100,measured\n")
    f = tmp_path / "m.csv"
    f.write_text(text)
    store = DatasetStore(tmp_path / "d.sqlite")
    import_file(store, str(f))
    assert store.status().reasons == {"imported without quality (no VMAF)": 1}


def test_published_dataset_imports_cleanly() -> None:
    res = parse_measurements(PCS2024.read_text(), "csv", PCS2024.name)
    assert not res.errors and len(res.records) == 90
    assert {r.energy_basis for r in res.records} == {"measured"}
    assert len({r.clip for r in res.records}) == 6
    # the paper's headline: x265 CRF 30 at 1080p is about 1.1 µJ per pixel (median)
    px = sorted(r.energy_j / (r.settings.width * r.settings.height * r.frames)  # type: ignore[operator]
                for r in res.records if r.settings.height == 1080 and r.settings.crf == 30)
    assert 0.5e-6 < px[len(px) // 2] < 3e-6


def test_cli_import_exit_code_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    f = tmp_path / "m.csv"
    f.write_text(CSV)
    args = build_parser().parse_args(["import", str(f), "--data-dir", str(tmp_path / "t")])
    assert args.fn(args) == 1
    err = capsys.readouterr().err
    assert f"{f}: line 5: energy_basis" in err
