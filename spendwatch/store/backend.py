"""The seam between the store and its database: SQLite (a file path, the embedded default) or PostgreSQL (a
`postgresql://` URL, for deployments where the scheduled job and the Slack handler run apart).

The store's SQL is written once, in SQLite's dialect where the two agree (`?` placeholders, `INSERT ... ON
CONFLICT ... DO UPDATE SET x=excluded.x`, `ON CONFLICT DO NOTHING`, `RETURNING id`); the PostgreSQL backend
rewrites `?` to psycopg's `%s`. What differs beyond that is handled here or in the per-dialect migrations
(column types: identity ids, DOUBLE PRECISION for REAL, byte-order text), never in the store's sections.

Concurrency is the one semantic both backends must share. Every check-then-write in the store (a Slack
request seen once, a quarantine slot taken once, an outbox row claimed once, an approval decided once) runs
inside `transaction()`, and `transaction()` admits one writer at a time, whichever process it comes from:
- SQLite: `BEGIN IMMEDIATE` takes the file's write lock at the start (waiting up to 30 s for it).
- PostgreSQL: the transaction's first statement is `pg_advisory_xact_lock(key)`, a lock held until COMMIT or
  ROLLBACK, keyed by database and schema; every statement after it runs under READ COMMITTED with a snapshot
  taken after the lock was granted, so it sees everything the previous writer committed. `lock_timeout` gives
  up after 30 s, as SQLite does. Reads outside a transaction take no lock (autocommit).
A single writer at a time is what SQLite has always given this store; keeping it on PostgreSQL keeps every
section's reasoning valid without per-table locking (`FOR UPDATE`, SKIP LOCKED) that would have to be right in
each place. Write transactions here are short (a few rows), so the serialisation costs little.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
LOCK_TIMEOUT_S = 30


class StoreError(RuntimeError):
    """The state cannot be used: unreachable, or its schema is newer than this spendwatch."""


def is_postgres_url(location: Path | str) -> bool:
    return isinstance(location, str) and urlsplit(location).scheme in POSTGRES_SCHEMES and "://" in location


def state_location(raw: Path | str) -> Path | str:
    """A state setting as a user wrote it: a PostgreSQL URL stays a string (a `Path` would fold its `//`);
    anything else is a file path, `~` expanded. `:memory:` stays as it is."""
    if isinstance(raw, Path):
        return raw
    if is_postgres_url(raw) or raw == ":memory:":
        return raw
    return Path(raw).expanduser()


def resolve_state(explicit: Path | str | None = None, *, environ: Mapping[str, str] | None = None,
                  configured: Path | str | None = None, default: Path | str | None = None) -> Path | str:
    """Where the state lives, first that is set: `explicit` (a --state flag), $SPENDWATCH_STATE,
    $SPENDWATCH_DATABASE_URL (the deployments' secret: the Terraform modules fill it from the cloud's secret
    store), `configured` (the config file's `state`), `default` ($SPENDWATCH_HOME/state.db when not given).

    The environment comes before the config file because that is where secrets arrive: a URL with a password
    does not belong in the TOML (which is not secret).
    """
    env = os.environ if environ is None else environ
    url = env.get("SPENDWATCH_DATABASE_URL")
    if url and not (explicit or env.get("SPENDWATCH_STATE")) and not is_postgres_url(url):
        # a secret still holding a placeholder would otherwise open as an SQLite file of that name, one per
        # container, and the job and the service would each keep their own state without a word
        shown = f"a {urlsplit(url).scheme}:// URL" if "://" in url else repr(url[:40])  # no password shown
        raise StoreError(f"SPENDWATCH_DATABASE_URL is set but is not a postgresql:// URL ({shown}): "
                         "set the secret's value, or unset it")
    for value in (explicit, env.get("SPENDWATCH_STATE"), url, configured, default):
        if value:
            return state_location(value)
    from .core import default_path

    return default_path()


def describe(location: Path | str) -> str:
    """The location for messages and logs: a URL without its password."""
    if not is_postgres_url(location):
        return str(location)
    parts = urlsplit(str(location))
    if parts.password is None:
        return str(location)
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Backend(Protocol):
    """What the store needs from a database connection."""

    dialect: str  # "sqlite" or "postgres": picks the migrations directory
    where: str  # for messages: the file, or the URL without its password

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def transaction(self) -> AbstractContextManager[Backend]:
        """A write transaction: one writer at a time (module doc)."""

    def has_table(self, name: str) -> bool: ...

    def close(self) -> None: ...


def open_backend(location: Path | str) -> Backend:
    """SQLite for a path, PostgreSQL for a `postgresql://` (or `postgres://`) URL."""
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return SqliteBackend(location)


class SqliteBackend:
    dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.where = str(path)
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; `transaction()` says where they are.
        self._db = sqlite3.connect(str(path), timeout=LOCK_TIMEOUT_S, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[SqliteBackend]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def close(self) -> None:
        self._db.close()


class PostgresBackend:
    dialect = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.where = describe(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"{self.where}: not a valid PostgreSQL URL ({exc})") from exc
        defaults = {"application_name": "spendwatch", "connect_timeout": 10}
        extra = {k: v for k, v in defaults.items() if k not in params}
        try:
            self._db = psycopg.connect(url, autocommit=True, **extra)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect to PostgreSQL: {str(exc).strip()}") from exc
        self._db.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
        database, schema = self._db.execute("SELECT current_database(), current_schema()").fetchone() or (None, None)
        if schema is None:
            self._db.close()
            raise StoreError(f"{self.where}: no schema of the search_path exists in database {database}; "
                             "create it or set search_path (options=-csearch_path=NAME in the URL)")
        self.schema = str(schema)
        # One writer per spendwatch state: the lock is keyed by database and schema, so two states sharing a
        # server (or a database, in separate schemas) do not wait on each other.
        digest = hashlib.sha256(f"spendwatch:{database}:{schema}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(_pyformat(sql), tuple(params))

    @contextmanager
    def transaction(self) -> Iterator[PostgresBackend]:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            yield self

    def has_table(self, name: str) -> bool:
        row = self._db.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def close(self) -> None:
        self._db.close()


@lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s`; a literal `%` doubled (psycopg reads `%` everywhere).
    A `?` inside a quoted literal, a quoted identifier or a `--` comment is left alone."""
    out: list[str] = []
    quote: str | None = None  # the quote character we are inside, or "\n" inside a comment
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "-" and sql.startswith("--", i):
            quote = "\n"
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)
