-- The same table as sqlite/0003_models.sql: BYTEA for the skops file's bytes, the JSON metadata as text (as
-- every other document in this store), names and times COLLATE "C" as in 0001.
CREATE TABLE models (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at TEXT COLLATE "C" NOT NULL,
    bytes BYTEA NOT NULL,
    metadata TEXT COLLATE "C" NOT NULL
);
