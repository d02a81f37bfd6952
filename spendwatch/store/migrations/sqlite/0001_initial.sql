-- The schema as it stood before numbered migrations (its `meta` table said schema_version 1). Every statement
-- is IF NOT EXISTS: a state file made by that code adopts this migration without change, and a file from
-- before some of its tables existed (each section added tables only, never columns) gains the missing ones.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS findings (
    id TEXT PRIMARY KEY,
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT,
    resource TEXT,
    principal TEXT,
    severity INTEGER NOT NULL,
    score REAL NOT NULL,
    status TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_severity ON findings (severity, last_seen);

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    source TEXT NOT NULL,
    complete INTEGER NOT NULL,
    findings INTEGER NOT NULL,
    new_findings INTEGER NOT NULL,
    report TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS quarantines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT,
    resource TEXT NOT NULL,
    finding_id TEXT,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    released_at TEXT,
    released_by TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantines_resource ON quarantines (cloud, account, resource, state);
CREATE INDEX IF NOT EXISTS quarantines_created ON quarantines (created_at);

CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    cloud TEXT NOT NULL,
    account TEXT,
    region TEXT,
    resource TEXT NOT NULL,
    finding_id TEXT,
    step TEXT NOT NULL,
    description TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_resource ON audit (resource, id);

CREATE TABLE IF NOT EXISTS slack_messages (
    finding_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    posted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    severity INTEGER,
    hourly_cost_usd REAL,
    replies INTEGER NOT NULL DEFAULT 0,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS slack_seen_requests (
    digest TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS slack_seen_expiry ON slack_seen_requests (expires_at);

CREATE TABLE IF NOT EXISTS source_watermarks (
    cloud TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    source TEXT NOT NULL,
    scope TEXT NOT NULL,
    position TEXT NOT NULL,
    seen TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (cloud, account, region, source, scope)
);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    version TEXT NOT NULL,
    activity TEXT NOT NULL,
    severity INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    claimed_until REAL,
    delivered_at REAL,
    last_error TEXT,
    UNIQUE (sink, finding_id, version)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (sink, delivered_at);

CREATE TABLE IF NOT EXISTS serve_alerts (
    finding_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    alerted_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS approval_requests (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    count INTEGER NOT NULL,
    region TEXT NOT NULL,
    hours REAL NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    projected_usd REAL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    expires_at TEXT,
    channel TEXT,
    ts TEXT
);
CREATE INDEX IF NOT EXISTS approval_due ON approval_requests (status, expires_at);
