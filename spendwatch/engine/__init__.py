"""The scale engine: flow records streamed into DuckDB, and the flow features expressed as SQL.

- `flows.FlowEngine` takes batches of canonical flow records as they are read (any reader thread), reduces
  each batch at once to per-(interface, peer, server port, ten-minute window) aggregates with Arrow's hash
  aggregation, and keeps them in an embedded DuckDB database that compresses them and spills to disk past its
  memory limit. Memory then follows neither the records nor the aggregate.
- `summary` runs in DuckDB once the read is done: the per-(resource, 10-minute or 1-hour window) flow features
  `models.features` would compute from every record, and the few rows the rules read one by one.
- `sql` holds the same reduction and the per-hour flow features as SQL text (DuckDB's dialect), and translates
  them with sqlglot for Athena (Trino) and BigQuery, so the heavy aggregation can run where the data already
  lives and only per-window rows travel back.

Nothing here is imported by `spendwatch --help`; DuckDB and sqlglot load only when a scan or `spendwatch sql`
needs them.
"""
