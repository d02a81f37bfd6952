from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Store

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


def make(resource: str = "i-0abc", *, seen: datetime = T0, score: float = 0.9, sev: Severity = Severity.HIGH,
         evidence: tuple[str, ...] = ("pool domain",)) -> Finding:
    return Finding(
        id=finding_id("aws", "012345678901", resource), cloud="aws", account="012345678901", region="us-east-1",
        resource=resource, principal="arn:aws:iam::012345678901:role/agent", severity=sev, score=score,
        rules=["pool-domain"], evidence=list(evidence), first_seen=seen, last_seen=seen + timedelta(hours=1),
        detected_at=seen + timedelta(hours=1), hourly_cost_usd=5.672, summary="miner", principal_type="agent",
    )


def test_same_scan_twice_makes_no_duplicate(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        first = store.upsert([make()], now=T0)
        again = store.upsert([make()], now=T0 + timedelta(minutes=15))
        assert [c for _, c in first] == ["new"]
        assert [c for _, c in again] == ["unchanged"]
        assert store.count() == 1


def test_update_moves_last_seen_and_keeps_detection_time_and_status(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.upsert([make()], now=T0)
        store._db.execute("UPDATE findings SET status='quarantined', doc=json_set(doc, '$.status', 'quarantined')")
    later = make(seen=T0 + timedelta(hours=3), sev=Severity.CRITICAL, score=0.97)
    with Store(path) as store:
        [(merged, change)] = store.upsert([later], now=T0 + timedelta(hours=4))
        assert change == "updated"
        assert merged.first_seen == T0
        assert merged.last_seen == T0 + timedelta(hours=4)
        assert merged.detected_at == T0 + timedelta(hours=1)
        assert merged.status == "quarantined"
        assert merged.severity is Severity.CRITICAL
        stored = store.get(merged.id)
        assert stored is not None and stored.to_json() == merged.to_json()


def test_findings_are_listed_worst_first_and_filtered(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.upsert([make("i-1", sev=Severity.LOW, score=0.3), make("i-2"), make("i-3", sev=Severity.CRITICAL)],
                     now=T0)
        assert [f.resource for f in store.findings()] == ["i-3", "i-2", "i-1"]
        assert [f.resource for f in store.findings(min_severity=Severity.HIGH)] == ["i-3", "i-2"]


def test_runs_are_recorded(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.record_run(started_at=T0, finished_at=T0, source="x", report={"complete": False}, findings=2,
                         new_findings=1)
        [run] = store.runs()
        assert (run.source, run.complete, run.findings, run.new_findings) == ("x", False, 2, 1)


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)
