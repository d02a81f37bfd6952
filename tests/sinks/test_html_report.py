"""The HTML report, rendered by a real headless Chromium (the system package), and the `report` command."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from spendwatch.chart import ChartSeries, render_chart
from spendwatch.cli import main
from spendwatch.findings import Severity
from spendwatch.report import RunReport
from spendwatch.sinks.html_report import render_report_html, write_report
from spendwatch.store import Store
from tests.fakes.findings import T0, make_finding

CHROMIUM = os.environ.get("SPENDWATCH_CHROMIUM", "/usr/bin/chromium")


def chromium() -> str:
    found = shutil.which(CHROMIUM) or shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{CHROMIUM} is missing and CI is set: the HTML report must be checked in a real browser")
    pytest.skip(f"{CHROMIUM} is not installed (Debian package `chromium`); the browser check needs it")


def _browser(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: containers run as root; a throwaway profile so runs never share state.
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'profile'}", "--no-first-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def sample(tmp_path: Path) -> tuple[Path, list]:
    hours = [T0 - timedelta(hours=12) + timedelta(minutes=30 * i) for i in range(30)]
    png = render_chart(ChartSeries(hours, [5.0 if h < T0 - timedelta(hours=5) else 99.0 for h in hours],
                                   "gpu_util of i-0abc", "%"), (T0 - timedelta(hours=5), T0))
    findings = [make_finding(), make_finding("i-0low", severity=Severity.LOW, rules=["spend-spike"],
                                             summary="Spend of i-0low up 3x <script>alert(1)</script>")]
    report = RunReport()
    report.read("s3://bucket/flows/1.gz", "vpc-flow-logs", {"flows": 1200})
    report.problem("s3://bucket/flows/2.gz", "truncated gzip", records=3)
    report.gap("azure/sub-1/flows", "AuthorizationFailed: no read access")
    path = write_report(tmp_path / "report.html", findings, report, generated_at=T0, charts={findings[0].id: png})
    return path, findings


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    path, findings = sample(tmp_path)
    page = path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "data:image/png;base64," in page and "http://" not in page.replace("http-equiv", "")
    assert "COVERAGE GAPS" in page and "AuthorizationFailed" in page and "truncated gzip" in page
    assert page.index(findings[0].id) < page.index(findings[1].id)  # worst first
    assert "No run report" in render_report_html([], None, generated_at=T0)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    path, findings = sample(tmp_path)
    shot = tmp_path / "report.png"
    run = _browser(f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri(), tmp=tmp_path)
    assert shot.exists(), run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses to a few KB
    if os.environ.get("SPENDWATCH_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["SPENDWATCH_KEEP_SCREENSHOT"])
    dom = _browser("--dump-dom", path.as_uri(), tmp=tmp_path).stdout
    assert dom.count('class="finding-row"') == 2
    for f in findings:
        assert f'data-finding-id="{f.id}"' in dom
    assert "gulf.moneroocean.stream" in dom and "COVERAGE GAPS" in dom
    assert "<script>alert" not in dom  # text from the cloud stayed text
    assert 'id="count-findings">2<' in dom


def test_report_command_from_stored_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    with Store(db) as store:
        store.upsert([make_finding(), make_finding("i-2", severity=Severity.MEDIUM)], now=T0)
        report = RunReport()
        report.gap("gcp/ml-prod/flows", "PERMISSION_DENIED")
        store.record_run(started_at=T0, finished_at=T0, source="test", report=report.to_dict(), findings=2,
                         new_findings=2)
    out = tmp_path / "out" / "r.html"
    assert main(["report", "--state", str(db), "-o", str(out)]) == 0
    page = out.read_text()
    assert "i-0abc" in page and "i-2" in page and "PERMISSION_DENIED" in page and "last run #1" in page
    assert "2 findings" in capsys.readouterr().out
