"""Numbered schema migrations: a state file made before them upgrades with its data intact, every state records
each migration once, a newer state is refused, and a failing migration changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spendwatch.store import (
    SCHEMA_VERSION,
    AlertLedger,
    Approvals,
    ModelRecords,
    Outbox,
    SlackRecords,
    Store,
    StoreError,
    Watermarks,
    migrate,
)
from spendwatch.store.migrate import Migration
from tests.fakes.findings import T0, make_finding

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store" / "state_v1.sql"


def legacy_file(path: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """The state file of tests/fixtures/store/state_v1.sql (made by the code before migrations)."""
    db = sqlite3.connect(path)
    db.executescript(FIXTURE.read_text())
    for table in drop:
        db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()
    return path


def recorded(store: Store) -> list[tuple[int, str, str]]:
    return [tuple(r) for r in store._db.execute("SELECT version, name, applied_at FROM schema_migrations"
                                                " ORDER BY version")]


def test_a_state_file_from_before_migrations_upgrades_with_its_data(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "state.db")
    f1, f2 = make_finding("i-0aaa"), make_finding("i-0bbb")
    with Store(path) as store:
        assert [(v, n) for v, n, _ in recorded(store)] == [(1, "initial"), (2, "findings_subject"), (3, "models")]
        # Every table's rows, as the old code wrote them.
        assert store.count() == 2 and store.get(f1.id).status == "quarantined"  # type: ignore[union-attr]
        [run] = store.runs()
        assert (run.id, run.source, run.complete, run.findings) == (1, "data:/exports", True, 2)
        active = store.active_quarantine(cloud="aws", account="012345678901", resource="i-0aaa")
        assert active is not None and active.state == "active" and active.record["snapshot"] == "snap-1"
        [line] = store.audit_log()
        assert (line.actor, line.step, line.detail) == ("slack:U0ALICE", "isolate", {"groups": ["sg-1"]})
        msg = SlackRecords(store).message(f1.id)
        assert msg is not None and (msg.ts, msg.replies, msg.hourly_cost_usd) == ("1763632800.000100", 1, 6.0)
        assert not SlackRecords(store).first_sighting("digest-of-a-click", now=T0.timestamp() + 1,
                                                      expires_at=T0.timestamp() + 601)  # still a replay
        [mark] = Watermarks(store).load("aws").values()
        assert mark.position == "AWSLogs/x/2026/11/20/part-0003.gz" and len(mark.seen) == 1
        items = {i.sink: i for i in Outbox(store).items()}
        assert items["pager"].state == "delivered" and items["pager"].enqueued_at == T0.timestamp() + 0.123456
        assert items["siem"].state == "pending" and items["siem"].finding.id == f2.id
        assert AlertLedger(store).digest(f1.id) == "digest-v1"
        assert Approvals(store).get("ap-1").projected_usd == 262.2  # type: ignore[union-attr]
        # What the migrations added, and ids that carry on from the old ones.
        indexes = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"findings_resource", "findings_principal", "findings_severity"} <= indexes
        assert ModelRecords(store).names() == []  # 0003: the table a PostgreSQL state keeps its model in
        assert store.record_run(started_at=T0, finished_at=T0, source="x", report={}, findings=0,
                                new_findings=0) == 2
        first = recorded(store)
    with Store(path) as store:  # opening again applies nothing
        assert recorded(store) == first
    meta = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert meta == str(SCHEMA_VERSION)  # so spendwatch from before migrations refuses the upgraded file


def test_an_early_state_file_gains_the_tables_added_after_it(tmp_path: Path) -> None:
    """Before the outbox, serve and approvals existed, a v1 file had only some tables; it gains the rest."""
    path = legacy_file(tmp_path / "state.db", drop=("outbox", "serve_alerts", "approval_requests"))
    with Store(path) as store:
        assert store.count() == 2
        assert Outbox(store).enqueue("s", make_finding("i-9"), version="v1", now=1.0)
        AlertLedger(store).record("f", "d", now=T0)
        assert Approvals(store).all() == []


def test_a_legacy_file_with_a_newer_meta_version_is_refused(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "state.db")
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema 99 is newer"):
        Store(path)
    assert not sqlite3.connect(path).execute(
        "SELECT 1 FROM sqlite_master WHERE name='schema_migrations'").fetchone()  # refused before any change


def test_every_migration_is_recorded_once(store_location: Path | str) -> None:
    with Store(store_location) as store:
        first = recorded(store)
    with Store(store_location) as store:
        assert recorded(store) == first
    assert [v for v, _, _ in first] == list(range(1, SCHEMA_VERSION + 1))


def test_a_failing_migration_changes_nothing(store_location: Path | str) -> None:
    broken = Migration(SCHEMA_VERSION + 1, "broken",
                       "CREATE TABLE extra (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    with Store(store_location) as store:
        steps = (*migrate.migrations(store.dialect), broken)
        with pytest.raises(StoreError, match=f"{broken.version:04d}_broken failed, nothing was changed"):
            migrate.upgrade(store._db, steps)
        assert not store._db.has_table("extra")
        assert [v for v, _, _ in recorded(store)] == list(range(1, SCHEMA_VERSION + 1))
        store.upsert([make_finding()], now=T0)  # the state still works


def test_dialects_have_the_same_migrations() -> None:
    sqlite_steps = [(m.version, m.name) for m in migrate.migrations("sqlite")]
    assert sqlite_steps == [(m.version, m.name) for m in migrate.migrations("postgres")]
    assert sqlite_steps[-1][0] == SCHEMA_VERSION


def test_statements_split_where_sql_says_they_end() -> None:
    m = Migration(1, "x", "-- a comment; not a statement\nCREATE TABLE t (a TEXT DEFAULT 'x;y');\n\n"
                          "INSERT INTO t VALUES ('1'); INSERT INTO t VALUES ('2');\n")
    assert m.statements() == ["-- a comment; not a statement\nCREATE TABLE t (a TEXT DEFAULT 'x;y');",
                              "INSERT INTO t VALUES ('1');", "INSERT INTO t VALUES ('2');"]
    with pytest.raises(StoreError, match="without a closing ';'"):
        Migration(2, "y", "CREATE TABLE u (a TEXT)\n").statements()
