"""Model files kept in the state itself (migration 0003).

Reached through `ModelRecords(store)`. One row per name: the bytes of a model file exactly as it would lie on
disk (a skops archive for the baseline model, see spendwatch.models.model_store), its JSON metadata, and when it
was written. A PostgreSQL state has no directory to put `model.skops` beside, and the scheduled job that trains
the model and the scans (or Slack handler) that read it may run on different machines: the state they already
share is where the model goes.

The store only keeps bytes: it never deserialises them. Loading, and refusing a file that is not a spendwatch
model, is the model store's business (skops with an explicit list of trusted types; never pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .core import _ts

if TYPE_CHECKING:
    from .core import Store


@dataclass(frozen=True)
class StoredBlob:
    """One model file as stored: its bytes, its metadata and when it was written (fixed-width UTC text)."""

    name: str
    created_at: str
    data: bytes
    metadata: dict[str, Any]


class ModelRecords:
    """The models table of a `Store` (same connection, same transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def where(self) -> str:
        """For messages: the state (a URL without its password) and the table."""
        return f"{self.store.where} (table models)"

    def put(self, name: str, data: bytes, *, metadata: dict[str, Any], now: datetime) -> None:
        """Write (or replace) the model `name` in one transaction: a reader sees the old one or the new one."""
        with self.store._tx() as db:
            db.execute("INSERT INTO models (name, created_at, bytes, metadata) VALUES (?,?,?,?)"
                       " ON CONFLICT (name) DO UPDATE SET created_at=excluded.created_at, bytes=excluded.bytes,"
                       " metadata=excluded.metadata",
                       (name, _ts(now), bytes(data), json.dumps(metadata, sort_keys=True, default=str)))

    def get(self, name: str) -> StoredBlob | None:
        row = self.store._db.execute("SELECT name, created_at, bytes, metadata FROM models WHERE name=?",
                                     (name,)).fetchone()
        if row is None:
            return None
        return StoredBlob(str(row[0]), str(row[1]), bytes(row[2]), json.loads(row[3] or "{}"))

    def names(self) -> list[str]:
        return [str(r[0]) for r in self.store._db.execute("SELECT name FROM models ORDER BY name")]
