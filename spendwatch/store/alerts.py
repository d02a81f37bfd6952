"""What `spendwatch serve` has alerted (issue 8).

Reached through `AlertLedger(store)`. One row per finding: a digest of the finding as it was last sent to
Slack. `spendwatch serve` posts when a finding has no Slack message yet (a new incident, or one whose run was
killed between storing it and alerting) and replies in its thread when the digest differs (the incident
changed since it was last told). Deciding from this table rather than from one run's new/updated changes is
what makes a killed run resume without losing or repeating an alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .core import _ts

if TYPE_CHECKING:
    from .core import Store


class AlertLedger:
    """The serve_alerts table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def digest(self, finding_id: str) -> str | None:
        row = self.store._db.execute("SELECT digest FROM serve_alerts WHERE finding_id=?", (finding_id,)).fetchone()
        return str(row[0]) if row else None

    def record(self, finding_id: str, digest: str, *, now: datetime) -> None:
        with self.store._tx() as db:
            db.execute("INSERT INTO serve_alerts (finding_id, digest, alerted_at) VALUES (?,?,?)"
                       " ON CONFLICT (finding_id) DO UPDATE SET digest=excluded.digest, alerted_at=excluded.alerted_at",
                       (finding_id, digest, _ts(now)))


