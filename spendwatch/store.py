"""Where findings and runs live between scans: SQLite, the embedded default.

A finding's id is stable across runs (it names the incident's subject), so storing the same scan twice
creates no duplicate: the stored incident is updated (last_seen moves forward, first_seen back, severity and
evidence follow the latest scan) while what people decided (status) and when it was first detected are kept.
Every scan is recorded in `runs` with its report, so a later reader can tell a quiet run from a blind one.

The store knows nothing about detection or clouds; it keeps plain JSON documents with a few indexed columns.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .findings import Finding, Severity

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS findings (
    id TEXT PRIMARY KEY,
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT,
    resource TEXT,
    principal TEXT,
    severity INTEGER NOT NULL,
    score REAL NOT NULL,
    status TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_severity ON findings (severity, last_seen);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    source TEXT NOT NULL,
    complete INTEGER NOT NULL,
    findings INTEGER NOT NULL,
    new_findings INTEGER NOT NULL,
    report TEXT NOT NULL
);
"""

Change = Literal["new", "updated", "unchanged"]


def default_home() -> Path:
    """`$SPENDWATCH_HOME`, else `~/.spendwatch`."""
    env = os.environ.get("SPENDWATCH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".spendwatch"


def default_path() -> Path:
    return default_home() / "state.db"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StoredRun:
    id: int
    started_at: str
    finished_at: str
    source: str
    complete: bool
    findings: int
    new_findings: int


class Store:
    """SQLite store of findings and runs. One instance per thread; cheap to open."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)  # idempotent; executescript commits on its own
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: state schema {row[0]} is newer than this spendwatch understands "
                    f"({SCHEMA_VERSION}); upgrade spendwatch"
                )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- findings ---------------------------------------------------------------------------------------

    def upsert(self, findings: Iterable[Finding], *, now: datetime) -> list[tuple[Finding, Change]]:
        """Store findings merged with what is stored (see module doc); return each as stored, and its change."""
        changes: list[tuple[Finding, Change]] = []
        with self._tx() as db:
            for f in findings:
                row = db.execute("SELECT doc FROM findings WHERE id = ?", (f.id,)).fetchone()
                change: Change
                if row is None:
                    merged, change = f, "new"
                else:
                    old = Finding.from_json(json.loads(row[0]))
                    merged = _merge(old, f)
                    change = "unchanged" if merged.to_json() == old.to_json() else "updated"
                changes.append((merged, change))
                if change == "unchanged":
                    continue
                doc = merged.dumps()
                db.execute(
                    """INSERT INTO findings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(id) DO UPDATE SET region=excluded.region, resource=excluded.resource,
                       principal=excluded.principal, severity=excluded.severity, score=excluded.score,
                       status=excluded.status, first_seen=excluded.first_seen, last_seen=excluded.last_seen,
                       detected_at=excluded.detected_at, updated_at=excluded.updated_at, doc=excluded.doc""",
                    (
                        merged.id, merged.cloud, merged.account, merged.region, merged.resource,
                        merged.principal, int(merged.severity), merged.score, merged.status,
                        _iso(merged.first_seen), _iso(merged.last_seen), _iso(merged.detected_at), _iso(now),
                        doc,
                    ),
                )
        return changes

    def get(self, finding_id: str) -> Finding | None:
        row = self._db.execute("SELECT doc FROM findings WHERE id = ?", (finding_id,)).fetchone()
        return Finding.from_json(json.loads(row[0])) if row else None

    def findings(
        self, *, min_severity: Severity = Severity.INFO, status: str | None = None, limit: int | None = None
    ) -> list[Finding]:
        """Stored findings, worst first, then most recent."""
        sql = "SELECT doc FROM findings WHERE severity >= ?"
        args: list[Any] = [int(min_severity)]
        if status:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY severity DESC, score DESC, last_seen DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Finding.from_json(json.loads(r[0])) for r in self._db.execute(sql, args)]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM findings").fetchone()[0])

    # -- runs -------------------------------------------------------------------------------------------

    def record_run(
        self,
        *,
        started_at: datetime,
        finished_at: datetime,
        source: str,
        report: dict[str, Any],
        findings: int,
        new_findings: int,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (started_at, finished_at, source, complete, findings, new_findings, report)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    _iso(started_at), _iso(finished_at), source, int(bool(report.get("complete"))), findings,
                    new_findings, json.dumps(report),
                ),
            )
            return int(cur.lastrowid or 0)

    def runs(self, limit: int = 20) -> list[StoredRun]:
        rows = self._db.execute(
            "SELECT id, started_at, finished_at, source, complete, findings, new_findings FROM runs"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [StoredRun(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    # -- actions: quarantines, the blast-radius limit and the audit log (issue 6) -------------------------
    # Everything below belongs to spendwatch.actions. The quarantine record is what release undoes; the
    # blast-radius count is taken from the same table inside one IMMEDIATE transaction, so two processes
    # sharing this file cannot both take the last slot.

    def reserve_quarantine(
        self,
        *,
        cloud: str,
        account: str,
        region: str | None,
        resource: str,
        finding_id: str | None,
        actor: str,
        action: str,
        now: datetime,
        limit: int,
        record: dict[str, Any],
        window_s: int = 3600,
    ) -> int:
        """Take a blast-radius slot and open a quarantine record (state `applying`); return its id.

        Raises `QuarantineRefused` when the resource already has an unreleased quarantine or `limit`
        quarantines started in the last `window_s` seconds.
        """
        since = _ts(datetime.fromtimestamp(now.timestamp() - window_s, UTC))
        with self._tx() as db:
            row = db.execute(
                "SELECT id, state, created_at FROM quarantines WHERE cloud=? AND account=? AND resource=?"
                " AND state != 'released'",
                (cloud, account, resource),
            ).fetchone()
            if row is not None:
                raise QuarantineRefused(
                    f"{resource} is already quarantined (record {row[0]}, {row[1]} since {row[2]}); "
                    f"release it first"
                )
            used = int(db.execute("SELECT COUNT(*) FROM quarantines WHERE created_at >= ?", (since,)).fetchone()[0])
            if used >= limit:
                raise QuarantineRefused(
                    f"blast-radius limit reached: {used} quarantine(s) in the last hour, limit {limit} "
                    f"(SPENDWATCH_MAX_QUARANTINES_PER_HOUR); nothing was changed"
                )
            cur = db.execute(
                "INSERT INTO quarantines (cloud, account, region, resource, finding_id, action, state, actor,"
                " created_at, updated_at, record) VALUES (?,?,?,?,?,?,'applying',?,?,?,?)",
                (cloud, account, region, resource, finding_id, action, actor, _ts(now), _ts(now),
                 json.dumps(record, default=str)),
            )
            return int(cur.lastrowid or 0)

    def update_quarantine(self, quarantine_id: int, *, record: dict[str, Any], state: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE quarantines SET record=?, state=?, updated_at=? WHERE id=?",
                (json.dumps(record, default=str), state, _ts(datetime.now(UTC)), quarantine_id),
            )

    def mark_released(self, quarantine_id: int, *, now: datetime, actor: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE quarantines SET state='released', released_at=?, released_by=?, updated_at=? WHERE id=?",
                (_ts(now), actor, _ts(now), quarantine_id),
            )

    def quarantine(self, quarantine_id: int) -> StoredQuarantine | None:
        row = self._db.execute(f"SELECT {_Q_COLUMNS} FROM quarantines WHERE id=?", (quarantine_id,)).fetchone()
        return _stored_quarantine(row) if row else None

    def active_quarantine(self, *, cloud: str, account: str, resource: str) -> StoredQuarantine | None:
        """The unreleased quarantine of a resource (applying, active or partial), if any."""
        row = self._db.execute(
            f"SELECT {_Q_COLUMNS} FROM quarantines WHERE cloud=? AND account=? AND resource=?"
            " AND state != 'released' ORDER BY id DESC LIMIT 1",
            (cloud, account, resource),
        ).fetchone()
        return _stored_quarantine(row) if row else None

    def quarantines(self, *, active_only: bool = False, limit: int = 100) -> list[StoredQuarantine]:
        sql = f"SELECT {_Q_COLUMNS} FROM quarantines"
        if active_only:
            sql += " WHERE state != 'released'"
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (limit,))
        return [_stored_quarantine(r) for r in rows]

    def quarantines_since(self, now: datetime, *, window_s: int = 3600) -> int:
        """Quarantines started in the `window_s` seconds before `now` (the blast-radius count)."""
        since = _ts(datetime.fromtimestamp(now.timestamp() - window_s, UTC))
        return int(self._db.execute("SELECT COUNT(*) FROM quarantines WHERE created_at >= ?", (since,)).fetchone()[0])

    def write_audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        cloud: str,
        account: str | None,
        region: str | None,
        resource: str,
        finding_id: str | None,
        step: str,
        description: str,
        outcome: str,
        dry_run: bool,
        detail: str = "{}",
    ) -> int:
        """Append one line to the audit log (never updated or deleted by spendwatch)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO audit (at, actor, action, cloud, account, region, resource, finding_id, step,"
                " description, outcome, dry_run, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (_ts(at), actor, action, cloud, account, region, resource, finding_id, step, description, outcome,
                 int(dry_run), detail),
            )
            return int(cur.lastrowid or 0)

    def audit_log(self, *, resource: str | None = None, limit: int | None = 200) -> list[AuditEntry]:
        """Audit lines, oldest first (the last `limit` of them)."""
        sql = f"SELECT {_A_COLUMNS} FROM audit"
        args: list[Any] = []
        if resource:
            sql += " WHERE resource = ?"
            args.append(resource)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = list(self._db.execute(sql, args))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], bool(r[12]),
                           json.loads(r[13] or "{}")) for r in reversed(rows)]

    def finding_for_resource(self, *, cloud: str, resource: str, account: str | None = None) -> Finding | None:
        """The most recent stored finding about a resource (or principal), worst first."""
        sql = "SELECT doc FROM findings WHERE cloud=? AND (resource=? OR principal=?)"
        args: list[Any] = [cloud, resource, resource]
        if account:
            sql += " AND account=?"
            args.append(account)
        row = self._db.execute(sql + " ORDER BY (resource=?) DESC, last_seen DESC, severity DESC LIMIT 1",
                               [*args, resource]).fetchone()
        return Finding.from_json(json.loads(row[0])) if row else None

    def set_finding_status(self, finding_id: str, status: str, *, now: datetime) -> bool:
        """Set a stored finding's status (e.g. quarantined by an action); False when there is no such finding."""
        from .findings import STATUSES

        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._tx() as db:
            row = db.execute("SELECT doc FROM findings WHERE id=?", (finding_id,)).fetchone()
            if row is None:
                return False
            doc = json.loads(row[0])
            doc["status"] = status
            db.execute("UPDATE findings SET status=?, doc=?, updated_at=? WHERE id=?",
                       (status, json.dumps(doc, separators=(",", ":")), _iso(now), finding_id))
            return True


def _merge(old: Finding, new: Finding) -> Finding:
    """The stored incident updated by a new scan's view of it."""
    rules = list(dict.fromkeys([*new.rules, *old.rules]))
    evidence = list(dict.fromkeys(new.evidence))
    return Finding(
        id=old.id,
        cloud=new.cloud,
        account=new.account,
        region=new.region or old.region,
        resource=new.resource or old.resource,
        principal=new.principal or old.principal,
        severity=new.severity,
        score=new.score,
        rules=rules,
        evidence=evidence,
        first_seen=min(old.first_seen, new.first_seen),
        last_seen=max(old.last_seen, new.last_seen),
        detected_at=old.detected_at,
        hourly_cost_usd=new.hourly_cost_usd if new.hourly_cost_usd is not None else old.hourly_cost_usd,
        summary=new.summary,
        status=old.status,
        principal_type=new.principal_type or old.principal_type,
        instance_type=new.instance_type or old.instance_type,
        related=sorted(set(old.related) | set(new.related)),
    )


# -- actions: tables and records (issue 6) ----------------------------------------------------------------

_ACTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT,
    resource TEXT NOT NULL,
    finding_id TEXT,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    released_at TEXT,
    released_by TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantines_resource ON quarantines (cloud, account, resource, state);
CREATE INDEX IF NOT EXISTS quarantines_created ON quarantines (created_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    cloud TEXT NOT NULL,
    account TEXT,
    region TEXT,
    resource TEXT NOT NULL,
    finding_id TEXT,
    step TEXT NOT NULL,
    description TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_resource ON audit (resource, id);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _ACTIONS_SCHEMA

_Q_COLUMNS = ("id, cloud, account, region, resource, finding_id, action, state, actor, created_at, updated_at,"
              " released_at, released_by, record")
_A_COLUMNS = ("id, at, actor, action, cloud, account, region, resource, finding_id, step, description, outcome,"
              " dry_run, detail")


def _ts(value: datetime) -> str:
    """Fixed-width UTC time (always with microseconds) so the blast-radius window compares as text."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class QuarantineRefused(Exception):
    """The store refused to open a quarantine: the resource is already quarantined or the limit is reached."""


@dataclass(frozen=True)
class StoredQuarantine:
    """One quarantine as stored: `record` is what the action changed, and what release undoes."""

    id: int
    cloud: str
    account: str
    region: str | None
    resource: str
    finding_id: str | None
    action: str
    state: str  # applying, active, partial, released
    actor: str
    created_at: str
    updated_at: str
    released_at: str | None
    released_by: str | None
    record: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stored_quarantine(row: Any) -> StoredQuarantine:
    return StoredQuarantine(
        id=row[0], cloud=row[1], account=row[2], region=row[3], resource=row[4], finding_id=row[5], action=row[6],
        state=row[7], actor=row[8], created_at=row[9], updated_at=row[10], released_at=row[11], released_by=row[12],
        record=json.loads(row[13]),
    )


@dataclass(frozen=True)
class AuditEntry:
    """One audit line: who did what to which resource, when, with what outcome, and whether it was a dry run."""

    id: int
    at: str
    actor: str
    action: str
    cloud: str
    account: str | None
    region: str | None
    resource: str
    finding_id: str | None
    step: str
    description: str
    outcome: str
    dry_run: bool
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- Slack: alert messages and seen interaction requests (issue 6, Slack part) -----------------------------
# Kept apart from the code above and reached through `SlackRecords(store)`, so the Store class itself is
# unchanged. `slack_messages` remembers where each finding's alert was posted (its thread receives the
# updates); `slack_seen_requests` holds a digest of every signed interaction request for as long as its
# timestamp could still pass verification, so a replay is refused by every process sharing this file.

_SLACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS slack_messages (
    finding_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    posted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    severity INTEGER,
    hourly_cost_usd REAL,
    replies INTEGER NOT NULL DEFAULT 0,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS slack_seen_requests (
    digest TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS slack_seen_expiry ON slack_seen_requests (expires_at);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _SLACK_SCHEMA


@dataclass(frozen=True)
class SlackMessage:
    """Where a finding's alert lives in Slack, and what it last said (so an update can say what changed)."""

    finding_id: str
    channel: str
    ts: str
    posted_at: str
    updated_at: str
    severity: int | None
    hourly_cost_usd: float | None
    replies: int
    outcome: str | None  # the last action's outcome line shown on the alert ("Quarantined by ...")


class SlackRecords:
    """The Slack tables of a `Store` (same connection, same transactions). One per Store, like the Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def message(self, finding_id: str) -> SlackMessage | None:
        row = self.store._db.execute(
            "SELECT finding_id, channel, ts, posted_at, updated_at, severity, hourly_cost_usd, replies, outcome"
            " FROM slack_messages WHERE finding_id=?", (finding_id,)).fetchone()
        return SlackMessage(*row) if row else None

    def remember_message(self, finding_id: str, *, channel: str, ts: str, severity: int | None,
                         hourly_cost_usd: float | None, now: datetime) -> None:
        """Record the alert just posted for `finding_id` (a re-post replaces the old thread)."""
        with self.store._tx() as db:
            db.execute(
                "INSERT INTO slack_messages (finding_id, channel, ts, posted_at, updated_at, severity,"
                " hourly_cost_usd) VALUES (?,?,?,?,?,?,?) ON CONFLICT(finding_id) DO UPDATE SET"
                " channel=excluded.channel, ts=excluded.ts, posted_at=excluded.posted_at,"
                " updated_at=excluded.updated_at, severity=excluded.severity,"
                " hourly_cost_usd=excluded.hourly_cost_usd, replies=0, outcome=NULL",
                (finding_id, channel, ts, _ts(now), _ts(now), severity, hourly_cost_usd),
            )

    def note_reply(self, finding_id: str, *, severity: int | None, hourly_cost_usd: float | None,
                   now: datetime) -> None:
        """Record that an update went to the thread and what it said."""
        with self.store._tx() as db:
            db.execute(
                "UPDATE slack_messages SET replies=replies+1, severity=?, hourly_cost_usd=?, updated_at=?"
                " WHERE finding_id=?", (severity, hourly_cost_usd, _ts(now), finding_id))

    def set_outcome(self, finding_id: str, outcome: str | None, *, now: datetime) -> None:
        with self.store._tx() as db:
            db.execute("UPDATE slack_messages SET outcome=?, updated_at=? WHERE finding_id=?",
                       (outcome, _ts(now), finding_id))

    def first_sighting(self, digest: str, *, now: float, expires_at: float) -> bool:
        """Record a request digest; False when it was already recorded and has not expired (a replay).

        Expired digests are purged in the same transaction; the check and the insert are one IMMEDIATE
        transaction, so two processes receiving the same request cannot both accept it.
        """
        with self.store._tx() as db:
            db.execute("DELETE FROM slack_seen_requests WHERE expires_at < ?", (now,))
            cur = db.execute("INSERT OR IGNORE INTO slack_seen_requests (digest, expires_at) VALUES (?, ?)",
                             (digest, expires_at))
            return cur.rowcount == 1


# -- connectors: watermarks per cloud, account, region and source (issue 5) --------------------------------
# Kept apart from the code above and reached through `Watermarks(store)`. A watermark says how far a source
# has been read: `position` is opaque to the store (an S3 key to list after, a time in milliseconds, a CUR
# execution id) and `seen` holds what was read at or after it (keys, event ids), so files that arrive late,
# sorting before the newest one read, are still found and nothing is read twice. Connectors save watermarks
# only after the run's findings are stored: a run killed before that is re-read whole by the next run.

_WATERMARK_SCHEMA = """
CREATE TABLE IF NOT EXISTS source_watermarks (
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    source TEXT NOT NULL,
    scope TEXT NOT NULL,
    position TEXT NOT NULL,
    seen TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (cloud, account, region, source, scope)
);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _WATERMARK_SCHEMA


@dataclass(frozen=True)
class Watermark:
    """How far one source of one account and region has been read. `scope` tells apart several streams of
    the same source (an S3 prefix, a log group); `account` and `region` may be "*" / "" where the source
    spans accounts or has no region (a CUR export, a Resolver log of one VPC)."""

    cloud: str
    account: str
    region: str
    source: str
    scope: str
    position: str
    seen: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.cloud, self.account, self.region, self.source, self.scope)


class Watermarks:
    """The watermark table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, cloud: str) -> dict[tuple[str, str, str, str, str], Watermark]:
        """Every watermark of `cloud`, by key."""
        rows = self.store._db.execute(
            "SELECT cloud, account, region, source, scope, position, seen FROM source_watermarks WHERE cloud=?",
            (cloud,))
        marks = [Watermark(r[0], r[1], r[2], r[3], r[4], r[5], frozenset(json.loads(r[6]))) for r in rows]
        return {m.key: m for m in marks}

    def save(self, marks: Iterable[Watermark], *, now: datetime) -> None:
        """Store watermarks, all or none (one transaction)."""
        with self.store._tx() as db:
            for m in marks:
                db.execute(
                    "INSERT INTO source_watermarks VALUES (?,?,?,?,?,?,?,?) ON CONFLICT"
                    " (cloud, account, region, source, scope) DO UPDATE SET position=excluded.position,"
                    " seen=excluded.seen, updated_at=excluded.updated_at",
                    (*m.key, m.position, json.dumps(sorted(m.seen)), _ts(now)),
                )


# -- sinks: the delivery outbox (issue 10) -----------------------------------------------------------------
# Kept apart from the code above and reached through `Outbox(store)`. One row per (sink, finding, version):
# the UNIQUE key makes enqueueing idempotent, so scanning the same state twice never sends an update twice.
# The finding is stored as it was when enqueued, so what is delivered survives a restart unchanged. Rows move
# pending -> sending (claimed, with a lease so a crashed sender's rows come back) -> delivered; a failure puts
# the row back to pending with `next_attempt_at` pushed out (exponential backoff, computed by the caller). An
# older version still pending when a newer one arrives is `superseded`: the receiver gets the latest state,
# not a replay of every intermediate one. Times here are epoch seconds (REAL), compared as numbers.

_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    version TEXT NOT NULL,
    activity TEXT NOT NULL,
    severity INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    claimed_until REAL,
    delivered_at REAL,
    last_error TEXT,
    UNIQUE (sink, finding_id, version)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (sink, delivered_at);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _OUTBOX_SCHEMA

OUTBOX_COLUMNS = ("id, sink, finding_id, version, activity, severity, payload, state, attempts, enqueued_at,"
                  " next_attempt_at, claimed_until, delivered_at, last_error")


@dataclass(frozen=True)
class OutboxItem:
    """One update of one finding for one sink. `delivery_id` is stable: receivers can dedupe on it."""

    id: int
    sink: str
    finding_id: str
    version: str
    activity: str  # create, update or close (what the receiver should do with its copy of the finding)
    severity: int
    payload: str  # the finding's JSON as enqueued
    state: str  # pending, sending, delivered, superseded
    attempts: int
    enqueued_at: float
    next_attempt_at: float
    claimed_until: float | None
    delivered_at: float | None
    last_error: str | None

    @property
    def delivery_id(self) -> str:
        return f"{self.sink}:{self.finding_id}:{self.version}"

    @property
    def finding(self) -> Finding:
        return Finding.from_json(json.loads(self.payload))


class Outbox:
    """The outbox table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue(self, sink: str, finding: Finding, *, version: str, now: float) -> bool:
        """Queue `finding` at `version` for `sink`; False when that version was already queued (or sent).

        The activity is `close` for a resolved finding, `create` while the sink has never been sent this
        finding (nor has a pending create for it), else `update`.
        """
        with self.store._tx() as db:
            if db.execute("SELECT 1 FROM outbox WHERE sink=? AND finding_id=? AND version=?",
                          (sink, finding.id, version)).fetchone():
                return False
            sent_or_queued = db.execute(
                "SELECT 1 FROM outbox WHERE sink=? AND finding_id=? AND state IN ('delivered','sending')"
                " LIMIT 1", (sink, finding.id)).fetchone()
            # A create that never went out is carried into its successor, so the receiver still sees a create.
            activity = "close" if finding.status == "resolved" else "create" if sent_or_queued is None else "update"
            db.execute("UPDATE outbox SET state='superseded' WHERE sink=? AND finding_id=? AND state='pending'",
                       (sink, finding.id))
            db.execute(
                "INSERT INTO outbox (sink, finding_id, version, activity, severity, payload, state, attempts,"
                " enqueued_at, next_attempt_at) VALUES (?,?,?,?,?,?,'pending',0,?,?)",
                (sink, finding.id, version, activity, int(finding.severity), finding.dumps(), now, now),
            )
            return True

    def claim(self, sink: str, *, now: float, limit: int, lease_s: float = 300.0) -> list[OutboxItem]:
        """Take up to `limit` due items of `sink`, worst first, and lease them for `lease_s` seconds.

        Items whose lease ran out (a sender died mid-delivery) are due again. One IMMEDIATE transaction, so
        two senders sharing the file never take the same item.
        """
        if limit <= 0:
            return []
        with self.store._tx() as db:
            rows = list(db.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sink=? AND next_attempt_at <= ? AND"
                " (state='pending' OR (state='sending' AND claimed_until < ?))"
                " ORDER BY severity DESC, id LIMIT ?", (sink, now, now, limit)))
            for r in rows:
                db.execute("UPDATE outbox SET state='sending', claimed_until=? WHERE id=?", (now + lease_s, r[0]))
        return [OutboxItem(*r[:7], "sending", *r[8:11], now + lease_s, *r[12:]) for r in rows]

    def delivered(self, item_id: int, *, now: float) -> None:
        with self.store._tx() as db:
            db.execute("UPDATE outbox SET state='delivered', delivered_at=?, attempts=attempts+1, claimed_until=NULL,"
                       " last_error=NULL WHERE id=?", (now, item_id))

    def failed(self, item_id: int, *, error: str, next_attempt_at: float) -> None:
        """Count a failed attempt and put the item back, due again at `next_attempt_at`."""
        with self.store._tx() as db:
            db.execute("UPDATE outbox SET state=CASE WHEN state='sending' THEN 'pending' ELSE state END,"
                       " attempts=attempts+1, next_attempt_at=?, claimed_until=NULL, last_error=? WHERE id=?",
                       (next_attempt_at, error[:2000], item_id))
            self._supersede_if_newer(db, item_id)

    @staticmethod
    def _supersede_if_newer(db: sqlite3.Connection, item_id: int) -> None:
        """A version that failed while a newer one was queued is dropped for the newer one (which inherits a
        create the receiver has not seen yet)."""
        row = db.execute("SELECT sink, finding_id, activity FROM outbox WHERE id=?", (item_id,)).fetchone()
        if row is None:
            return
        newer = db.execute("SELECT id FROM outbox WHERE sink=? AND finding_id=? AND id>? AND state='pending'"
                           " ORDER BY id DESC LIMIT 1", (row[0], row[1], item_id)).fetchone()
        if newer is None:
            return
        db.execute("UPDATE outbox SET state='superseded' WHERE id=?", (item_id,))
        if row[2] == "create":
            db.execute("UPDATE outbox SET activity='create' WHERE id=? AND activity='update'", (newer[0],))

    def release(self, item_id: int, *, next_attempt_at: float | None = None) -> None:
        """Give a claimed item back untried (its sink is down or over its rate limit): no attempt counted."""
        with self.store._tx() as db:
            db.execute("UPDATE outbox SET state='pending', claimed_until=NULL,"
                       " next_attempt_at=COALESCE(?, next_attempt_at) WHERE id=? AND state='sending'",
                       (next_attempt_at, item_id))
            self._supersede_if_newer(db, item_id)

    def delivered_since(self, sink: str, since: float) -> list[float]:
        """Delivery times of `sink` at or after `since`, oldest first (the rate limiter's window)."""
        rows = self.store._db.execute("SELECT delivered_at FROM outbox WHERE sink=? AND delivered_at >= ?"
                                      " ORDER BY delivered_at", (sink, since))
        return [float(r[0]) for r in rows]

    def items(self, sink: str | None = None, *, state: str | None = None) -> list[OutboxItem]:
        sql, args = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE 1=1", []
        if sink is not None:
            sql += " AND sink=?"
            args.append(sink)
        if state is not None:
            sql += " AND state=?"
            args.append(state)
        return [OutboxItem(*r) for r in self.store._db.execute(sql + " ORDER BY id", args)]

    def counts(self) -> dict[str, dict[str, int]]:
        """{sink: {state: items}}."""
        out: dict[str, dict[str, int]] = {}
        for sink, state, n in self.store._db.execute("SELECT sink, state, COUNT(*) FROM outbox GROUP BY sink, state"):
            out.setdefault(sink, {})[state] = int(n)
        return out

    def last_run_report(self) -> tuple[StoredRun, dict[str, Any]] | None:
        """The most recent run and its report (for the HTML report of stored state)."""
        row = self.store._db.execute(
            "SELECT id, started_at, finished_at, source, complete, findings, new_findings, report FROM runs"
            " ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return StoredRun(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6]), json.loads(row[7])


# -- serve: what the scheduled service has alerted (issue 8) ------------------------------------------------
# Kept apart from the code above and reached through `AlertLedger(store)`. One row per finding: a digest of the
# finding as it was last sent to Slack. `spendwatch serve` posts when a finding has no Slack message yet (a new
# incident, or one whose run was killed between storing it and alerting) and replies in its thread when the
# digest differs (the incident changed since it was last told). Deciding from this table rather than from one
# run's new/updated changes is what makes a killed run resume without losing or repeating an alert.

_SERVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_alerts (
    finding_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    alerted_at TEXT NOT NULL
);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _SERVE_SCHEMA


class AlertLedger:
    """The serve_alerts table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def digest(self, finding_id: str) -> str | None:
        row = self.store._db.execute("SELECT digest FROM serve_alerts WHERE finding_id=?", (finding_id,)).fetchone()
        return str(row[0]) if row else None

    def record(self, finding_id: str, digest: str, *, now: datetime) -> None:
        with self.store._tx() as db:
            db.execute("INSERT INTO serve_alerts VALUES (?,?,?) ON CONFLICT(finding_id) DO UPDATE SET"
                       " digest=excluded.digest, alerted_at=excluded.alerted_at", (finding_id, digest, _ts(now)))


# -- approvals: time-boxed exceptions to the GPU guardrail (issue 11) ----------------------------------------
# Kept apart from the code above and reached through `Approvals(store)`. One row per request an agent or its
# operator made (`spendwatch request`); its status moves pending -> approved -> expired/revoked, or
# pending -> denied. `expires_at` is set when approved; the sweep (`spendwatch approvals expire`) revokes the
# rows whose time has come. Every transition is also written to the audit log by spendwatch.approvals.

_APPROVAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_requests (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    count INTEGER NOT NULL,
    region TEXT NOT NULL,
    hours REAL NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    projected_usd REAL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    expires_at TEXT,
    channel TEXT,
    ts TEXT
);
CREATE INDEX IF NOT EXISTS approval_due ON approval_requests (status, expires_at);
"""
# Added tables only (IF NOT EXISTS), so older state files gain them on open and SCHEMA_VERSION stays 1.
_SCHEMA += _APPROVAL_SCHEMA

_APPROVAL_COLUMNS = ("id, principal, instance_type, count, region, hours, reason, requested_by, requested_at,"
                     " projected_usd, status, decided_by, decided_at, expires_at, channel, ts")


@dataclass(frozen=True)
class StoredApproval:
    id: str
    principal: str
    instance_type: str
    count: int
    region: str
    hours: float
    reason: str
    requested_by: str
    requested_at: str
    projected_usd: float | None
    status: str  # pending / approved / denied / expired / revoked
    decided_by: str | None
    decided_at: str | None
    expires_at: str | None
    channel: str | None
    ts: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


class Approvals:
    """The approval table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, a: StoredApproval) -> None:
        with self.store._tx() as db:
            db.execute(f"INSERT INTO approval_requests ({_APPROVAL_COLUMNS}) VALUES"
                       " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", tuple(vars(a).values()))

    def get(self, approval_id: str) -> StoredApproval | None:
        row = self.store._db.execute(f"SELECT {_APPROVAL_COLUMNS} FROM approval_requests WHERE id=?",
                                     (approval_id,)).fetchone()
        return StoredApproval(*row) if row else None

    def all(self, *, status: str | None = None) -> list[StoredApproval]:
        sql, args = f"SELECT {_APPROVAL_COLUMNS} FROM approval_requests", []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        return [StoredApproval(*r) for r in self.store._db.execute(sql + " ORDER BY requested_at", args)]

    def set_message(self, approval_id: str, *, channel: str, ts: str) -> None:
        with self.store._tx() as db:
            db.execute("UPDATE approval_requests SET channel=?, ts=? WHERE id=?", (channel, ts, approval_id))

    def transition(self, approval_id: str, *, from_status: str, to_status: str, by: str | None, now: datetime,
                   expires_at: datetime | None = None) -> bool:
        """Move one request from `from_status` to `to_status`; False when it was not in `from_status` (another
        click or process got there first). Compare-and-set in one IMMEDIATE transaction."""
        with self.store._tx() as db:
            cur = db.execute(
                "UPDATE approval_requests SET status=?, decided_by=COALESCE(?, decided_by), decided_at=?,"
                " expires_at=COALESCE(?, expires_at) WHERE id=? AND status=?",
                (to_status, by, _ts(now), _ts(expires_at) if expires_at else None, approval_id, from_status))
            return cur.rowcount == 1

    def due(self, now: datetime) -> list[StoredApproval]:
        """Approved requests whose expiry has passed."""
        rows = self.store._db.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approval_requests WHERE status='approved' AND expires_at <= ?",
            (_ts(now),))
        return [StoredApproval(*r) for r in rows]
