"""The Slack tables: where each finding's alert was posted, and the interaction requests already seen.

Reached through `SlackRecords(store)`, so the Store class itself stays small. `slack_messages` remembers where
each finding's alert was posted (its thread receives the updates); `slack_seen_requests` holds a digest of
every signed interaction request for as long as its timestamp could still pass verification, so a replay is
refused by every process sharing this state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .core import _ts

if TYPE_CHECKING:
    from .core import Store


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

        Expired digests are purged in the same transaction; the check and the insert are one write
        transaction, so two processes receiving the same request cannot both accept it.
        """
        with self.store._tx() as db:
            db.execute("DELETE FROM slack_seen_requests WHERE expires_at < ?", (now,))
            cur = db.execute("INSERT INTO slack_seen_requests (digest, expires_at) VALUES (?, ?)"
                             " ON CONFLICT (digest) DO NOTHING", (digest, expires_at))
            return cur.rowcount == 1


