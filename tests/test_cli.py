"""The command line's contract: exit codes, --json, the run report, de-duplication across runs."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spendwatch.cli import main
from spendwatch.simulate import Truth, simulate

DESIGN_FIELDS = {
    "id", "cloud", "account", "region", "resource", "principal", "severity", "score", "rules", "evidence",
    "first_seen", "last_seen", "detected_at", "hourly_cost_usd", "summary", "status",
}


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    return simulate(tmp_path_factory.mktemp("org") / "data", seed=11, days=2.0, instances=30)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_quick_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, spendwatch.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('pandas', 'sklearn', 'boto3', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_scan_with_no_forest_to_fit_does_not_import_scikit_learn(tmp_path: Path) -> None:
    # scikit-learn and SciPy take about 0.9 s to import: a scan pays for them only when it fits or scores a forest
    # (a function's cold start, a scan of an empty or a small export).
    (tmp_path / "empty").mkdir()
    code = (
        "import sys, spendwatch.cli as c; "
        f"c.main(['scan', '--data', {str(tmp_path / 'empty')!r}, '--no-progress', '--json']); "
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_missing_directory_is_a_fatal_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "scan", "--data", str(tmp_path / "nope"), "--state", str(tmp_path / "s.db"))
    assert code == 1
    assert "nope" in err and "no such directory" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == 2


def test_empty_directory_is_a_gap_not_an_all_clear(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out, _ = run(capsys, "scan", "--data", str(tmp_path / "empty"), "--state", str(tmp_path / "s.db"))
    assert code == 0
    assert "COVERAGE GAPS" in out and "no export files found" in out


def test_json_contract_and_no_duplicates_across_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, org: Truth
) -> None:
    state = str(tmp_path / "s.db")
    code, out, err = run(capsys, "scan", "--data", str(org.root), "--json", "--state", state)
    assert code == 0
    lines = out.splitlines()
    assert lines, "the simulated incidents must produce findings"
    first = [json.loads(line) for line in lines]
    for f in first:
        assert set(f) >= DESIGN_FIELDS
        assert f["severity"] in ("low", "medium", "high", "critical")
        assert 0 <= f["score"] <= 1
        assert isinstance(f["account"], str)
    assert "Run report" in err and "records:" in err

    code, out2, _ = run(capsys, "scan", "--data", str(org.root), "--json", "--state", state)
    second = [json.loads(line) for line in out2.splitlines()]
    assert sorted(f["id"] for f in second) == sorted(f["id"] for f in first)
    assert {f["id"]: f["detected_at"] for f in second} == {f["id"]: f["detected_at"] for f in first}

    code, listed, _ = run(capsys, "findings", "--json", "--state", state)
    stored = [json.loads(line) for line in listed.splitlines()]
    assert len(stored) == len({f["id"] for f in stored}) == len(first)


def test_fail_on_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path, org: Truth) -> None:
    code, _, _ = run(capsys, "scan", "--data", str(org.root), "--json", "--fail-on", "high",
                     "--state", str(tmp_path / "s.db"))
    assert code == 3


def test_bad_file_is_reported_and_strict_makes_it_fatal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, org: Truth
) -> None:
    data = tmp_path / "data"
    shutil.copytree(org.root, data)
    flow = next(p for p in sorted(data.rglob("*.log.gz")) if "vpcflowlogs" in p.parts)
    flow.write_bytes(gzip.compress(b"version account-id interface-id srcaddr dstaddr")[:20])
    report_file = tmp_path / "report.json"
    code, _, err = run(capsys, "scan", "--data", str(data), "--json", "--state", str(tmp_path / "s.db"),
                         "--report", str(report_file))
    assert code == 0
    report = json.loads(report_file.read_text())
    assert not report["complete"]
    assert any(p["source"].endswith(flow.name) for p in report["problems"])
    assert flow.name in err

    code, _, err = run(capsys, "scan", "--data", str(data), "--strict", "--state", str(tmp_path / "s2.db"))
    assert code == 1
    assert "--strict" in err and flow.name in err
