"""Findings, runs, quarantines and the audit log: the `Store` itself (the other tables have their modules).

A finding's id is stable across runs (it names the incident's subject), so storing the same scan twice
creates no duplicate: the stored incident is updated (last_seen moves forward, first_seen back, severity and
evidence follow the latest scan) while what people decided (status) and when it was first detected are kept.
Every scan is recorded in `runs` with its report, so a later reader can tell a quiet run from a blind one.

The store knows nothing about detection or clouds; it keeps plain JSON documents with a few indexed columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..findings import Finding, Severity
from . import migrate
from .backend import Backend, describe, open_backend, state_location

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
    """The store of findings, runs, quarantines and the audit log, on SQLite or PostgreSQL (`location`: a file
    path, or a `postgresql://` URL). Opening it applies any pending schema migration. One instance per thread;
    cheap to open. The other tables are reached through their own classes (`Outbox(store)`, ...), which share
    this connection and its transactions."""

    def __init__(self, location: Path | str) -> None:
        location = state_location(location)
        self.location = location
        # The database file (None on PostgreSQL: there is none, so nothing may be written "beside" it).
        self.path: Path | None = location if isinstance(location, Path) else None
        self.where = describe(location)  # what messages name: the file, or the URL without its password
        self._db: Backend = open_backend(location)
        try:
            migrate.upgrade(self._db)
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgres"."""
        return self._db.dialect

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> AbstractContextManager[Backend]:
        """A write transaction: one writer at a time across every process sharing the state (backend.py)."""
        return self._db.transaction()

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
                    """INSERT INTO findings (id, cloud, account, region, resource, principal, severity, score, status,
                       first_seen, last_seen, detected_at, updated_at, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
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
                " VALUES (?,?,?,?,?,?,?) RETURNING id",
                (
                    _iso(started_at), _iso(finished_at), source, int(bool(report.get("complete"))), findings,
                    new_findings, json.dumps(report),
                ),
            )
            return int(cur.fetchone()[0])

    def runs(self, limit: int = 20) -> list[StoredRun]:
        rows = self._db.execute(
            "SELECT id, started_at, finished_at, source, complete, findings, new_findings FROM runs"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [StoredRun(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    # -- actions: quarantines, the blast-radius limit and the audit log (issue 6) -------------------------
    # Everything below belongs to spendwatch.actions. The quarantine record is what release undoes; the
    # blast-radius count is taken from the same table inside one write transaction, so two processes
    # sharing this state cannot both take the last slot (nor both quarantine one resource: a double click).

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
                " created_at, updated_at, record) VALUES (?,?,?,?,?,?,'applying',?,?,?,?) RETURNING id",
                (cloud, account, region, resource, finding_id, action, actor, _ts(now), _ts(now),
                 json.dumps(record, default=str)),
            )
            return int(cur.fetchone()[0])

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
                " description, outcome, dry_run, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (_ts(at), actor, action, cloud, account, region, resource, finding_id, step, description, outcome,
                 int(dry_run), detail),
            )
            return int(cur.fetchone()[0])

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
        from ..findings import STATUSES

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


# -- actions: records (issue 6); the tables are in migrations/*/0001_initial.sql ---------------------------

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


