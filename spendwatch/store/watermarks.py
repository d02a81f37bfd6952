"""How far each source has been read (issue 5).

Reached through `Watermarks(store)`. A watermark says how far a source has been read: `position` is opaque to
the store (an S3 key to list after, a time in milliseconds, a CUR execution id) and `seen` holds what was read
at or after it (keys, event ids), so files that arrive late, sorting before the newest one read, are still
found and nothing is read twice. Connectors save watermarks only after the run's findings are stored: a run
killed before that is re-read whole by the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .core import _ts

if TYPE_CHECKING:
    from .core import Store


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


