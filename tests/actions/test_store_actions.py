"""The store's actions section: blast-radius slots, quarantine records and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendwatch.store import QuarantineRefused, Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def reserve(store: Store, resource: str, now: datetime, limit: int = 5) -> int:
    return store.reserve_quarantine(cloud="aws", account="123456789012", region="us-east-1", resource=resource,
                                    finding_id=None, actor="test", action="aws.quarantine", now=now, limit=limit,
                                    record={"instance": resource})


def test_limit_holds_within_the_hour_and_frees_after_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    for i in range(5):
        with Store(path) as store:  # separate connections, as separate processes would open it
            reserve(store, f"i-{i}", T0 + timedelta(minutes=i))
    with Store(path) as store:
        with pytest.raises(QuarantineRefused, match="blast-radius limit reached: 5"):
            reserve(store, "i-5", T0 + timedelta(minutes=59))
        assert store.quarantines_since(T0 + timedelta(minutes=59)) == 5
        # one hour after the first slot was taken, that slot is free again
        reserve(store, "i-5", T0 + timedelta(minutes=60, seconds=1))
        assert len(store.quarantines()) == 6


def test_a_resource_cannot_be_quarantined_twice_until_released(store: Store) -> None:
    qid = reserve(store, "i-1", T0)
    with pytest.raises(QuarantineRefused, match="already quarantined"):
        reserve(store, "i-1", T0 + timedelta(minutes=1))
    store.update_quarantine(qid, record={"instance": "i-1", "done": True}, state="active")
    stored = store.active_quarantine(cloud="aws", account="123456789012", resource="i-1")
    assert stored is not None and stored.state == "active" and stored.record["done"] is True
    store.mark_released(qid, now=T0 + timedelta(minutes=2), actor="bob")
    assert store.active_quarantine(cloud="aws", account="123456789012", resource="i-1") is None
    reserve(store, "i-1", T0 + timedelta(minutes=3))


def test_audit_log_is_append_only_and_ordered(store: Store) -> None:
    for i, outcome in enumerate(("planned", "ok", "refused")):
        store.write_audit(at=T0 + timedelta(seconds=i), actor="cli:alice", action="aws.quarantine", cloud="aws",
                          account="123456789012", region="us-east-1", resource="i-1", finding_id=None,
                          step=f"s{i}", description="d", outcome=outcome, dry_run=i == 0, detail='{"k": 1}')
    log = store.audit_log(resource="i-1")
    assert [e.outcome for e in log] == ["planned", "ok", "refused"]
    assert log[0].dry_run and not log[1].dry_run and log[1].detail == {"k": 1}
    assert [e.step for e in store.audit_log(limit=2)] == ["s1", "s2"]
    assert store.audit_log(resource="i-2") == []
