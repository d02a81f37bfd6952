"""Every table of the store, on SQLite and on PostgreSQL (`store_location` runs each test on both): quarantines
and audit, Slack records, watermarks, the outbox, the serve alert ledger and approvals. Concurrency across
processes is in test_concurrency.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from spendwatch.delivery import SinkConfig, enqueue, flush
from spendwatch.store import (
    AlertLedger,
    Approvals,
    Outbox,
    QuarantineRefused,
    SlackRecords,
    Store,
    StoredApproval,
    Watermark,
    Watermarks,
)
from tests.fakes.findings import T0, make_finding

ACCOUNT = "012345678901"


def reserve(store: Store, resource: str, minutes: float, limit: int = 3) -> int:
    return store.reserve_quarantine(cloud="aws", account=ACCOUNT, region="us-east-1", resource=resource,
                                    finding_id=None, actor="test", action="aws.quarantine",
                                    now=T0 + timedelta(minutes=minutes), limit=limit, record={"instance": resource})


def test_quarantine_records_blast_radius_and_release(store_location: Path | str) -> None:
    with Store(store_location) as store:
        first = reserve(store, "i-1", 0)
        with pytest.raises(QuarantineRefused, match="already quarantined"):
            reserve(store, "i-1", 1)
        reserve(store, "i-2", 10)
        reserve(store, "i-3", 20)
        with pytest.raises(QuarantineRefused, match="blast-radius limit reached: 3"):
            reserve(store, "i-4", 59)
        assert store.quarantines_since(T0 + timedelta(minutes=59)) == 3
        store.update_quarantine(first, record={"instance": "i-1", "groups": ["sg-1"]}, state="active")
        active = store.active_quarantine(cloud="aws", account=ACCOUNT, resource="i-1")
        assert active is not None and (active.id, active.state, active.record["groups"]) == (first, "active", ["sg-1"])
        store.mark_released(first, now=T0 + timedelta(minutes=61), actor="bob")
        assert store.active_quarantine(cloud="aws", account=ACCOUNT, resource="i-1") is None
        released = store.quarantine(first)
        assert released is not None and released.released_by == "bob" and released.state == "released"
        assert len(store.quarantines(active_only=True)) == 2 and len(store.quarantines()) == 3
        reserve(store, "i-4", 61)  # the first slot's hour is over (microsecond-exact text times compare)


def test_audit_log_keeps_order_and_filters(store_location: Path | str) -> None:
    with Store(store_location) as store:
        ids = [store.write_audit(at=T0 + timedelta(seconds=i), actor="cli:alice", action="aws.quarantine",
                                 cloud="aws", account=ACCOUNT, region=None, resource=f"i-{i % 2}", finding_id=None,
                                 step=f"s{i}", description="d", outcome="ok", dry_run=i == 0, detail=f'{{"n": {i}}}')
               for i in range(4)]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert [(e.step, e.dry_run, e.detail) for e in store.audit_log(resource="i-0")] == [
            ("s0", True, {"n": 0}), ("s2", False, {"n": 2})]
        assert [e.step for e in store.audit_log(limit=3)] == ["s1", "s2", "s3"]


def test_slack_records_and_replay_protection(store_location: Path | str) -> None:
    f = make_finding("i-1")
    with Store(store_location) as store:
        records = SlackRecords(store)
        records.remember_message(f.id, channel="C1", ts="1.000100", severity=5, hourly_cost_usd=5.672, now=T0)
        records.note_reply(f.id, severity=4, hourly_cost_usd=6.25, now=T0 + timedelta(minutes=1))
        records.set_outcome(f.id, "Quarantined by <@U1>", now=T0 + timedelta(minutes=2))
        msg = records.message(f.id)
        assert msg is not None
        assert (msg.channel, msg.ts, msg.replies, msg.severity, msg.hourly_cost_usd, msg.outcome) == (
            "C1", "1.000100", 1, 4, 6.25, "Quarantined by <@U1>")
        records.remember_message(f.id, channel="C2", ts="2.0", severity=5, hourly_cost_usd=None, now=T0)  # re-post
        again = records.message(f.id)
        assert again is not None and (again.channel, again.replies, again.outcome) == ("C2", 0, None)

        now = T0.timestamp()
        assert records.first_sighting("d1", now=now, expires_at=now + 300)
        assert not records.first_sighting("d1", now=now + 1, expires_at=now + 301)  # a replay
        assert records.first_sighting("d1", now=now + 301, expires_at=now + 601)  # expired, purged, new again


def test_watermarks_round_trip_and_save_all_or_none(store_location: Path | str) -> None:
    a = Watermark("aws", ACCOUNT, "us-east-1", "flows", "vpc/", "key-0003", frozenset({"key-0004", "key-0005"}))
    b = Watermark("aws", "*", "", "cur", "cur/", "exec-17")
    with Store(store_location) as store:
        marks = Watermarks(store)
        marks.save([a, b], now=T0)
        assert marks.load("aws") == {a.key: a, b.key: b}
        assert marks.load("gcp") == {}
        moved = replace(a, position="key-0009", seen=frozenset())
        broken = replace(b, position="exec-18", seen=frozenset({"x", 1}))  # type: ignore[arg-type]  # not sortable
        with pytest.raises(TypeError):
            marks.save([moved, broken], now=T0)
        assert marks.load("aws") == {a.key: a, b.key: b}  # the first mark's update was rolled back too
        marks.save([moved], now=T0)
        assert marks.load("aws")[a.key] == moved


def test_outbox_enqueue_claim_fail_release_deliver(store_location: Path | str) -> None:
    f = make_finding("i-1")
    now = 1_800_000_000.123456  # epoch seconds with microseconds: a 4-byte REAL would round to minutes
    with Store(store_location) as store:
        ob = Outbox(store)
        assert ob.enqueue("pager", f, version="v1", now=now)
        assert not ob.enqueue("pager", f, version="v1", now=now + 1)  # idempotent
        [item] = ob.claim("pager", now=now, limit=5, lease_s=60)
        assert (item.activity, item.state, item.enqueued_at, item.claimed_until) == ("create", "sending", now,
                                                                                       now + 60)
        assert item.finding.to_json() == f.to_json()
        assert ob.claim("pager", now=now + 1, limit=5) == []  # leased
        ob.failed(item.id, error="HTTP 503", next_attempt_at=now + 10)
        [back] = ob.items("pager")
        assert (back.state, back.attempts, back.next_attempt_at, back.last_error) == ("pending", 1, now + 10,
                                                                                      "HTTP 503")
        assert ob.claim("pager", now=now + 9, limit=5) == []  # backing off
        [again] = ob.claim("pager", now=now + 10, limit=5)
        ob.release(again.id)  # untried: no attempt counted
        assert ob.items("pager")[0].attempts == 1 and ob.items("pager")[0].state == "pending"
        [third] = ob.claim("pager", now=now + 11, limit=5)
        ob.delivered(third.id, now=now + 12.5)
        assert ob.delivered_since("pager", now) == [now + 12.5]
        assert ob.enqueue("pager", replace(f, status="resolved"), version="v2", now=now + 20)
        assert [i.activity for i in ob.items("pager")] == ["create", "close"]
        assert ob.counts() == {"pager": {"delivered": 1, "pending": 1}}


def test_outbox_supersedes_and_carries_an_unsent_create(store_location: Path | str) -> None:
    f = make_finding("i-1")
    with Store(store_location) as store:
        ob = Outbox(store)
        ob.enqueue("s", f, version="v1", now=100.0)
        [claimed] = ob.claim("s", now=100.0, limit=1)
        ob.enqueue("s", replace(f, score=0.5), version="v2", now=101.0)  # queued while v1 is being sent
        assert [i.activity for i in ob.items("s")] == ["create", "update"]
        ob.failed(claimed.id, error="down", next_attempt_at=110.0)
        assert [(i.state, i.activity) for i in ob.items("s")] == [("superseded", "create"), ("pending", "create")]


def test_delivery_runs_on_the_store(store_location: Path | str) -> None:
    """spendwatch.delivery's enqueue and flush (the sinks' real caller) on this backend."""

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def send(self, item: object) -> None:
            self.sent.append(item.finding_id)  # type: ignore[attr-defined]

    found = [make_finding(f"i-{n}", score=0.5 + n / 100) for n in range(3)]
    cfg = [SinkConfig("hook", "webhook", {}, rate_limit=2)]
    rec = Recorder()
    with Store(store_location) as store:
        enqueue(found, cfg, store, T0)
        enqueue(found, cfg, store, T0)  # the same state again: nothing new queued
        assert flush(store, cfg, T0, sinks={"hook": rec}).sinks["hook"].delivered == 2
        assert flush(store, cfg, T0 + timedelta(seconds=61), sinks={"hook": rec}).sinks["hook"].delivered == 1
        last = Outbox(store).last_run_report()
    assert sorted(rec.sent) == sorted(f.id for f in found)
    assert last is None  # no scan was recorded


def test_alert_ledger_keeps_the_last_digest(store_location: Path | str) -> None:
    with Store(store_location) as store:
        ledger = AlertLedger(store)
        assert ledger.digest("f1") is None
        ledger.record("f1", "d1", now=T0)
        ledger.record("f1", "d2", now=T0 + timedelta(minutes=1))
        assert ledger.digest("f1") == "d2"


def approval(id_: str, requested_at: str) -> StoredApproval:
    return StoredApproval(id_, "arn:aws:iam::012345678901:role/trainer", "p4d.24xlarge", 2, "us-east-1", 4.0,
                          "fine-tune", "cli:bob", requested_at, 262.2, "pending", None, None, None, None, None)


def test_approvals_compare_and_set_and_expiry(store_location: Path | str) -> None:
    with Store(store_location) as store:
        ap = Approvals(store)
        ap.add(approval("b", "2026-11-20T09:00:00.000000Z"))
        ap.add(approval("a", "2026-11-20T08:00:00.000000Z"))
        assert [a.id for a in ap.all()] == ["a", "b"]
        assert ap.transition("a", from_status="pending", to_status="approved", by="U1", now=T0,
                             expires_at=T0 + timedelta(hours=4))
        assert not ap.transition("a", from_status="pending", to_status="denied", by="U2", now=T0)
        ap.set_message("a", channel="C1", ts="5.5")
        got = ap.get("a")
        assert got is not None and (got.status, got.decided_by, got.channel, got.hours) == ("approved", "U1", "C1",
                                                                                           4.0)
        assert ap.due(T0 + timedelta(hours=3, minutes=59)) == []
        assert [a.id for a in ap.due(T0 + timedelta(hours=4))] == ["a"]
        assert [a.id for a in ap.all(status="pending")] == ["b"]
