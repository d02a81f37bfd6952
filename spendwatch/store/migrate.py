"""Numbered schema migrations, applied when a store is opened.

The migrations are SQL files in `migrations/<dialect>/NNNN_name.sql` (see the README there). A state records
each one it applied in `schema_migrations` (version, name, applied_at). Opening a state:
1. reads `schema_migrations` without a lock: when every known migration is there (the usual case), done;
2. refuses a state that recorded a version newer than the last file here (`StoreError`: upgrade spendwatch);
3. otherwise takes the write transaction (one writer at a time, see backend.py), reads again (another process
   may have migrated meanwhile), and applies the missing ones in order, all in that one transaction: a failure
   leaves the state exactly as it was. SQLite and PostgreSQL both run DDL inside transactions.

SQLite files made before numbered migrations have no `schema_migrations` but a `meta` table saying
`schema_version` 1; 0001 is that schema with IF NOT EXISTS, so they adopt it unchanged and gain what came
after. `meta.schema_version` is kept equal to the newest applied migration, so a spendwatch from before
migrations (which checks only `meta`) refuses a file that newer code has changed.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from .backend import Backend, StoreError

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, split at each `;` that ends one (not one inside a quote or a comment)."""
        out: list[str] = []
        start = 0
        for end, ch in enumerate(self.sql):
            if ch == ";" and sqlite3.complete_statement(self.sql[start:end + 1]):
                if _code(self.sql[start:end + 1]):
                    out.append(self.sql[start:end + 1].strip())
                start = end + 1
        if _code(self.sql[start:]):
            raise StoreError(f"migration {self.version:04d}_{self.name}: statement without a closing ';'")
        return out


def _code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    """The dialect's migrations in order; numbered 1..N without gaps or a clear error."""
    folder = resources.files("spendwatch.store") / "migrations" / dialect
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise StoreError(f"{folder}/{entry.name}: a migration file must be named NNNN_lowercase_name.sql")
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise StoreError(f"{folder}: migrations must be numbered 1..{len(found)} without gaps or repeats; "
                         f"found {[m.version for m in found]}")
    return tuple(found)


def latest(dialect: str) -> int:
    return migrations(dialect)[-1].version


def applied(db: Backend) -> dict[int, str]:
    """{version: name} the state has recorded; empty for a new state or one from before migrations."""
    if not db.has_table("schema_migrations"):
        return {}
    return {int(v): str(n) for v, n in db.execute("SELECT version, name FROM schema_migrations")}


def upgrade(db: Backend, steps: tuple[Migration, ...] | None = None, *, now: datetime | None = None) -> list[int]:
    """Bring the state up to the last migration (module doc); the versions applied now."""
    steps = migrations(db.dialect) if steps is None else steps
    known = {m.version for m in steps}
    done = applied(db)
    _refuse_newer(db, done, steps)
    if known <= done.keys() and (db.dialect != "sqlite" or _meta_current(db, steps)):
        return []
    with db.transaction():
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                   " applied_at TEXT NOT NULL)")
        if db.dialect == "sqlite":
            _refuse_newer_legacy(db, steps)
        done = applied(db)
        _refuse_newer(db, done, steps)
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        new = [m for m in steps if m.version not in done]
        for m in new:
            for statement in m.statements():
                try:
                    db.execute(statement)
                except Exception as exc:
                    raise StoreError(f"{db.where}: migration {m.version:04d}_{m.name} failed, nothing was changed: "
                                     f"{exc}") from exc
            db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                       (m.version, m.name, stamp))
        if db.dialect == "sqlite" and db.has_table("meta"):
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE"
                       " SET value=excluded.value", (str(steps[-1].version),))
    return [m.version for m in new]


def _meta_current(db: Backend, steps: tuple[Migration, ...]) -> bool:
    """SQLite's legacy `meta.schema_version` says the last migration (else the slow path checks and fixes it)."""
    if not db.has_table("meta"):
        return True
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return row is not None and str(row[0]) == str(steps[-1].version)


def _refuse_newer(db: Backend, done: dict[int, str], steps: tuple[Migration, ...]) -> None:
    if not done:
        return
    newest = max(done)
    if newest > steps[-1].version:
        raise StoreError(
            f"{db.where}: the state's schema is at migration {newest:04d}_{done[newest]}, newer than this "
            f"spendwatch knows (up to {steps[-1].version:04d}_{steps[-1].name}); upgrade spendwatch, or point "
            f"it at another state")


def _refuse_newer_legacy(db: Backend, steps: tuple[Migration, ...]) -> None:
    """A file that only has `meta` (from before migrations) with a version we do not know."""
    if not db.has_table("meta"):
        return
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        return
    try:
        version = int(row[0])
    except ValueError as exc:
        raise StoreError(f"{db.where}: meta.schema_version is {row[0]!r}, not a number") from exc
    if version > steps[-1].version:
        raise StoreError(f"{db.where}: state schema {version} is newer than this spendwatch understands "
                         f"({steps[-1].version}); upgrade spendwatch")
