-- The organisation's baseline model kept in the state itself (spendwatch.store.models), for states that have
-- no file beside them (PostgreSQL): the scheduled job trains it and every scan, wherever it runs, reads it.
-- `bytes` is the skops file exactly as it would be written to disk; `metadata` is JSON (what it was trained on).
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    bytes BLOB NOT NULL,
    metadata TEXT NOT NULL
);
