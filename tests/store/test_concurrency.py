"""What must hold when several processes share one state, checked with real processes and real connections on
SQLite and on PostgreSQL: a Slack request or double click acts once, a quarantine slot and an outbox row are
taken once, an approval is decided once, concurrent upserts lose nothing, watermarks are never seen ahead of
the findings they follow, and processes opening a new state at once migrate it once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from spendwatch.store import Approvals, Outbox, Store, StoredApproval, Watermarks
from tests.store import racers

N = 6


def test_processes_opening_a_new_state_at_once_migrate_it_once(store_location: Path | str) -> None:
    assert len(set(racers.race(store_location, racers.open_only, N, migrated=False))) == 1
    with Store(store_location) as store:
        versions = [r[0] for r in store._db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, len(versions) + 1))


def test_one_slack_request_is_accepted_once(store_location: Path | str) -> None:
    accepted = racers.race(store_location, racers.see_request, N, "sha256:same-signed-request")
    assert sorted(accepted) == [False] * (N - 1) + [True]


def test_a_double_click_quarantines_once(store_location: Path | str) -> None:
    results = racers.race(store_location, racers.click_quarantine, N, "i-0abc", 10)
    reserved = [r for r in results if isinstance(r, int)]
    assert len(reserved) == 1, results
    assert all("already quarantined" in r for r in results if isinstance(r, str))
    with Store(store_location) as store:
        assert [q.id for q in store.quarantines()] == reserved


def test_the_blast_radius_limit_holds_across_processes(store_location: Path | str) -> None:
    limit = 3
    results = racers.race_each(store_location, racers.click_quarantine, [(f"i-{n}", limit) for n in range(N)])
    assert sum(isinstance(r, int) for r in results) == limit, results
    assert all("blast-radius limit reached" in r for r in results if isinstance(r, str))
    with Store(store_location) as store:
        assert store.quarantines_since(racers.T0 + timedelta(minutes=1)) == limit


def test_each_outbox_row_is_claimed_once(store_location: Path | str) -> None:
    with Store(store_location) as store:
        ob = Outbox(store)
        for n in range(30):
            assert ob.enqueue("hook", racers.finding(f"i-{n}"), version="v1", now=racers.T0.timestamp())
        queued = sorted(i.id for i in ob.items("hook"))
    taken = racers.race(store_location, racers.drain_outbox, N, "hook")
    flat = [i for mine in taken for i in mine]
    assert sorted(flat) == queued  # every row once: none lost, none sent twice
    with Store(store_location) as store:
        assert Outbox(store).counts() == {"hook": {"delivered": 30}}
        assert all(i.attempts == 1 for i in Outbox(store).items("hook"))


def test_an_approval_is_decided_once(store_location: Path | str) -> None:
    with Store(store_location) as store:
        Approvals(store).add(StoredApproval("ap-1", "role/trainer", "p4d.24xlarge", 1, "us-east-1", 1.0, "r",
                                            "cli:bob", "2026-11-20T09:00:00.000000Z", None, "pending", None, None,
                                            None, None, None))
    won = racers.race(store_location, racers.decide, N, "ap-1")
    assert won.count(True) == 1
    winner = won.index(True)
    with Store(store_location) as store:
        got = Approvals(store).get("ap-1")
    assert got is not None and got.decided_by == f"U{winner}"
    assert got.status == ("approved" if winner % 2 == 0 else "denied")


def test_concurrent_upserts_of_one_incident_lose_nothing(store_location: Path | str) -> None:
    racers.race(store_location, racers.upsert_same, N)
    with Store(store_location) as store:
        assert store.count() == 1
        stored = store.get(racers.finding().id)
    assert stored is not None
    # Whatever order the runs committed in, the merge saw every one: the latest hour seen, the earliest start.
    assert stored.last_seen == racers.T0 + timedelta(hours=N - 1)
    assert stored.first_seen == racers.T0 - timedelta(hours=1)


def test_watermarks_are_never_seen_ahead_of_their_findings(store_location: Path | str) -> None:
    results = racers.race(store_location, racers.scan_rounds, 4)
    assert results[0] == racers.ROUNDS and all(reads >= 1 for reads in results[1:]), results
    with Store(store_location) as store:
        assert {m.position for m in Watermarks(store).load("aws").values()} == {f"round {racers.ROUNDS:03d}"}
