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
