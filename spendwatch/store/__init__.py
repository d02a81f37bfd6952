"""Where findings, runs and everything the scheduled job and the Slack handler share live between scans.

`Store(location)`: SQLite for a file path (the embedded default, `$SPENDWATCH_HOME/state.db`), PostgreSQL for
a `postgresql://` URL (deployments where the job and the Slack handler run in separate processes or
machines). The same API and the same guarantees on both: see `backend` for how one writer at a time is kept
across processes, and `migrate` for the numbered schema migrations applied when a store is opened.

Modules: `core` (the Store: findings, runs, quarantines, audit), `slack`, `watermarks`, `outbox`, `alerts`,
`approvals`, `models` (the other tables, each reached through its own class around a Store), `backend`, `migrate`.
"""

from __future__ import annotations

from .alerts import AlertLedger
from .approvals import Approvals, StoredApproval
from .backend import StoreError, describe, is_postgres_url, resolve_state, state_location
from .core import (
    AuditEntry,
    Change,
    QuarantineRefused,
    Store,
    StoredQuarantine,
    StoredRun,
    default_home,
    default_path,
)
from .migrate import latest as _latest
from .models import ModelRecords, StoredBlob
from .outbox import OUTBOX_COLUMNS, Outbox, OutboxItem
from .slack import SlackMessage, SlackRecords
from .watermarks import Watermark, Watermarks

SCHEMA_VERSION = _latest("sqlite")  # the newest migration this code knows (the same number in every dialect)

__all__ = [
    "OUTBOX_COLUMNS", "SCHEMA_VERSION", "AlertLedger", "Approvals", "AuditEntry", "Change", "ModelRecords", "Outbox",
    "OutboxItem", "QuarantineRefused", "SlackMessage", "SlackRecords", "Store", "StoreError", "StoredApproval",
    "StoredBlob", "StoredQuarantine", "StoredRun", "Watermark", "Watermarks", "default_home", "default_path",
    "describe", "is_postgres_url", "resolve_state", "state_location",
]
