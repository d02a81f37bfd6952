"""Issue 2's acceptance: the demo finds both injected incidents and leaves legitimate training alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendwatch.cli import main
from spendwatch.findings import Severity
from spendwatch.pipeline import scan_directory
from spendwatch.simulate import simulate
from spendwatch.store import Store


@pytest.mark.slow
def test_demo_finds_the_incidents_and_spares_training(tmp_path: Path) -> None:
    truth = simulate(tmp_path / "data", seed=7, days=3.0, instances=60)
    with Store(tmp_path / "s.db") as store:
        result = scan_directory(truth.root, store=store)
    by_resource = {f.resource: f for f in result.findings}
    assert len(truth.incidents) >= 2
    for incident in truth.incidents:
        for resource in incident.resources:
            f = by_resource.get(resource)
            assert f is not None, f"{incident.name}: {resource} not found"
            assert f.severity >= Severity.HIGH, f"{incident.name}: {resource} only {f.severity.label}"
            assert f.principal == incident.principal, f"{incident.name}: principal {f.principal}"
    for resource in truth.legit_gpu:
        f = by_resource.get(resource)
        assert f is None or f.severity <= Severity.LOW, f"legit training {resource}: {f and f.severity.label}"
    assert result.report.complete, result.report.to_dict()


@pytest.mark.slow
def test_demo_command_writes_the_slack_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--days", "2", "--instances", "30"]) == 0
    out = capsys.readouterr().out
    assert "critical" in out or "high" in out
    payload = json.loads((tmp_path / "slack-alert.json").read_text())
    assert payload["blocks"][0]["type"] == "header"
    page = (tmp_path / "slack-alert.html").read_text()
    assert "<html" in page.lower() and "data:image/png;base64," in page
    assert (tmp_path / "slack-alert-chart.png").read_bytes().startswith(b"\x89PNG")
