"""The delivery outbox of the sinks (issue 10).

Reached through `Outbox(store)`. One row per (sink, finding, version): the UNIQUE key makes enqueueing
idempotent, so scanning the same state twice never sends an update twice. The finding is stored as it was when
enqueued, so what is delivered survives a restart unchanged. Rows move pending -> sending (claimed, with a
lease so a crashed sender's rows come back) -> delivered; a failure puts the row back to pending with
`next_attempt_at` pushed out (exponential backoff, computed by the caller). An older version still pending
when a newer one arrives is `superseded`: the receiver gets the latest state, not a replay of every
intermediate one. Times here are epoch seconds (REAL; DOUBLE PRECISION on PostgreSQL), compared as numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..findings import Finding
from .backend import Backend
from .core import StoredRun

if TYPE_CHECKING:
    from .core import Store


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

        Items whose lease ran out (a sender died mid-delivery) are due again. One write transaction, so
        two senders sharing the state never take the same item.
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
        return [replace(OutboxItem(*r), state="sending", claimed_until=now + lease_s) for r in rows]

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
    def _supersede_if_newer(db: Backend, item_id: int) -> None:
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


