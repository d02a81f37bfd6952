"""The store's findings and runs, on SQLite and on PostgreSQL (the `store_location` fixture runs each test on
both; tests/store/ covers the other tables, migrations and concurrency)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Store, StoreError

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


def make(resource: str = "i-0abc", *, seen: datetime = T0, score: float = 0.9, sev: Severity = Severity.HIGH,
         evidence: tuple[str, ...] = ("pool domain",)) -> Finding:
    return Finding(
        id=finding_id("aws", "012345678901", resource), cloud="aws", account="012345678901", region="us-east-1",
        resource=resource, principal="arn:aws:iam::012345678901:role/agent", severity=sev, score=score,
        rules=["pool-domain"], evidence=list(evidence), first_seen=seen, last_seen=seen + timedelta(hours=1),
        detected_at=seen + timedelta(hours=1), hourly_cost_usd=5.672, summary="miner", principal_type="agent",
    )


def test_same_scan_twice_makes_no_duplicate(store_location: Path | str) -> None:
    with Store(store_location) as store:
        first = store.upsert([make()], now=T0)
        again = store.upsert([make()], now=T0 + timedelta(minutes=15))
        assert [c for _, c in first] == ["new"]
        assert [c for _, c in again] == ["unchanged"]
        assert store.count() == 1


def test_update_moves_last_seen_and_keeps_detection_time_and_status(store_location: Path | str) -> None:
    with Store(store_location) as store:
        store.upsert([make()], now=T0)
        assert store.set_finding_status(make().id, "quarantined", now=T0)
        assert not store.set_finding_status("no-such-finding", "quarantined", now=T0)
    later = make(seen=T0 + timedelta(hours=3), sev=Severity.CRITICAL, score=0.97)
    with Store(store_location) as store:  # a second connection, as a later run would open
        [(merged, change)] = store.upsert([later], now=T0 + timedelta(hours=4))
        assert change == "updated"
        assert merged.first_seen == T0
        assert merged.last_seen == T0 + timedelta(hours=4)
        assert merged.detected_at == T0 + timedelta(hours=1)
        assert merged.status == "quarantined"
        assert merged.severity is Severity.CRITICAL
        stored = store.get(merged.id)
        assert stored is not None and stored.to_json() == merged.to_json()


def test_findings_are_listed_worst_first_and_filtered(store_location: Path | str) -> None:
    with Store(store_location) as store:
        store.upsert([make("i-1", sev=Severity.LOW, score=0.3), make("i-2"), make("i-3", sev=Severity.CRITICAL)],
                     now=T0)
        assert [f.resource for f in store.findings()] == ["i-3", "i-2", "i-1"]
        assert [f.resource for f in store.findings(min_severity=Severity.HIGH)] == ["i-3", "i-2"]


def test_runs_are_recorded(store_location: Path | str) -> None:
    with Store(store_location) as store:
        first = store.record_run(started_at=T0, finished_at=T0, source="x", report={"complete": False}, findings=2,
                                 new_findings=1)
        second = store.record_run(started_at=T0, finished_at=T0, source="y", report={"complete": True}, findings=0,
                                  new_findings=0)
        assert second > first
        [run, earlier] = store.runs()
        assert (earlier.id, earlier.source, earlier.complete, earlier.findings, earlier.new_findings) == (
            first, "x", False, 2, 1)
        assert (run.id, run.complete) == (second, True)


def test_refuses_a_newer_schema(store_location: Path | str) -> None:
    with Store(store_location) as store, store._tx() as db:  # a newer spendwatch recorded its migration 99
        db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'from_the_future', 'x')")
    with pytest.raises(StoreError, match="0099_from_the_future, newer than this spendwatch knows"):
        Store(store_location)
    assert issubclass(StoreError, RuntimeError)  # the CLI reports RuntimeError as a one-line error


def test_finding_for_resource_prefers_the_resource_then_the_latest(store_location: Path | str) -> None:
    with Store(store_location) as store:
        older = make("i-1", seen=T0)
        principal = replace(make("i-2", seen=T0 + timedelta(hours=5)), principal="i-1")
        store.upsert([older, principal, make("i-3")], now=T0)
        found = store.finding_for_resource(cloud="aws", resource="i-1")
        assert found is not None and found.id == older.id  # the finding *about* i-1 beats a newer mention
        assert store.finding_for_resource(cloud="gcp", resource="i-1") is None
        assert store.finding_for_resource(cloud="aws", resource="i-1", account="999999999999") is None


def test_text_sorts_byte_by_byte_on_both_backends(store_location: Path | str) -> None:
    """Ids and times sort as SQLite sorts them (byte order), whatever collation a PostgreSQL database has."""
    resources = ["i-B", "i-a", "i_c", "i-A", "i.d"]
    with Store(store_location) as store:
        store.upsert([make(r) for r in resources], now=T0)  # same severity, score and time: ordered by id
        ids = [f.id for f in store.findings()]
    assert ids == sorted(ids)
