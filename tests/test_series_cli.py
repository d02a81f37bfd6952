"""`spendwatch series`: the rows come back unchanged with anomaly_score and alert."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from spendwatch.cli import main


def write_series(path: Path, n: int = 1200) -> list[str]:
    rng = np.random.default_rng(0)
    values = [f"{v:.3f}" for v in 30 + rng.normal(0, 2, n)]
    values[1000] = "95.000"
    lines = ["timestamp,value"] + [f"2024-01-01 {i // 12 % 24:02d}:{i % 12 * 5:02d}:00,{v}"
                                   for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_series_writes_rows_back_with_score_and_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cpu.csv"
    lines = write_series(src)
    assert main(["series", str(src)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(lines) - 1
    assert [f"{r['timestamp']},{r['value']}" for r in rows] == lines[1:]  # values byte for byte
    assert rows[1000]["alert"] == "1" and float(rows[1000]["anomaly_score"]) >= 0.5
    assert all(0 <= float(r["anomaly_score"]) <= 1 for r in rows)

    out = tmp_path / "scored.csv"
    assert main(["series", str(src), "--threshold", "0.99", "-o", str(out)]) == 0
    scored = list(csv.DictReader(out.open()))
    assert all((float(r["anomaly_score"]) >= 0.99) == (r["alert"] == "1") for r in scored)


def test_series_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["series", str(tmp_path / "missing.csv")]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,v\n2024-01-01 00:00:00,1\n")
    assert main(["series", str(bad)]) == 1
    assert "value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["series", str(bad), "--threshold", "2"])
    assert exc.value.code == 2


def test_series_refuses_values_that_are_not_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cpu.csv"
    lines = write_series(src)
    lines[7] = lines[7].rsplit(",", 1)[0] + ",n/a"  # line 8 of the file (the header is line 1)
    lines[9] = lines[9].rsplit(",", 1)[0] + ","  # an empty value: a missing sample, scored, not refused
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.csv"
    assert main(["series", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(src) in err and "line 8 ('n/a')" in err and "'value'" in err and "1 bad row of 1200" in err
    assert not out.exists()  # nothing half-scored is left behind

    lines[7] = lines[7].rsplit(",", 1)[0] + ",30.000"
    src.write_text("\n".join(lines) + "\n")
    assert main(["series", str(src), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows[8]["value"] == "" and float(rows[8]["anomaly_score"]) < 0.5


NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


@pytest.mark.skipif(not NAB.is_dir(), reason=f"NAB data not found at {NAB} (shared/ beside the clone)")
def test_eval_nab_prints_three_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--nab", str(NAB)]) == 0
    out = capsys.readouterr().out
    assert "spendwatch series" in out and "numenta (HTM)" in out and "chosen while measuring" in out


def test_eval_without_source_or_with_missing_data(tmp_path: Path) -> None:
    assert main(["eval"]) == 2
    assert main(["eval", "--nab", str(tmp_path)]) == 1
