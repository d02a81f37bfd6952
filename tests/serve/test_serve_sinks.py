"""`spendwatch serve` delivers every scan's findings to the configured sinks through the outbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendwatch.config import ConfigError
from spendwatch.serve import ServeSettings, Service
from spendwatch.simulate import simulate
from tests.fakes.receiver import Receiver


def settings(tmp_path: Path, data: Path, url: str) -> ServeSettings:
    return ServeSettings.from_dict({
        "serve": {"data": str(data), "state": str(tmp_path / "state.db")},
        "sinks": {
            "pager": {"type": "webhook", "url": url, "secret": "s3cret", "route": {"min_severity": "high"}},
            "report": {"type": "html_report", "path": str(tmp_path / "report.html")},
        },
    }, environ={})


def test_each_scan_delivers_once_and_a_down_sink_catches_up(tmp_path: Path) -> None:
    truth = simulate(tmp_path / "data", seed=3, days=1.0, instances=16)
    receiver = Receiver().up()
    try:
        receiver.status = 503  # the pager is down for the first scan
        service = Service(settings(tmp_path, truth.root, receiver.url))
        first = service.run_scan()
        assert first.status == "ok"  # a failing sink never fails the scan
        assert receiver.requests and not receiver.accepted
        assert "<html" in (tmp_path / "report.html").read_text().lower()

        receiver.status = None  # back up: the next scan's flush delivers what was queued
        second = service.run_scan()
        assert second.status == "ok"
        delivered = [json.loads(r.body) for r in receiver.accepted]
        ids = [d.get("id") or d.get("finding", {}).get("id") for d in delivered]
        assert ids and all(ids) and len(ids) == len(set(ids)), ids  # each incident once
        assert second.findings >= len(ids)

        service.run_scan()  # nothing changed: nothing sent again
        assert len(receiver.accepted) == len(delivered)
    finally:
        receiver.down()


def test_a_bad_sink_table_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sinks"):
        ServeSettings.from_dict({"serve": {"data": str(tmp_path)}, "sinks": {"x": {"type": "carrier-pigeon"}}},
                                environ={})
