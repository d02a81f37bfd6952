"""Time-boxed exceptions to the GPU guardrail (issue 11).

Reached through `Approvals(store)`. One row per request an agent or its operator made (`spendwatch request`);
its status moves pending -> approved -> expired/revoked, or pending -> denied. `expires_at` is set when
approved; the sweep (`spendwatch approvals expire`) revokes the rows whose time has come. Every transition is
also written to the audit log by spendwatch.approvals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .core import _ts

if TYPE_CHECKING:
    from .core import Store


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
        click or process got there first). Compare-and-set in one write transaction."""
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
